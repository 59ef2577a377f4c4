"""Public Mamba-2 SSD scan: validation, custom_vjp glue around the Pallas kernels, dispatch."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import _dispatch
from kernels.ssd import pallas_gpu, pallas_tpu
from kernels.ssd.reference import acc_dtype, pad_time, ssd_chunked


def ssd(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, *, initial_state_BHPN=None, chunk_size=64,
        impl="auto"):
  """Mamba-2 SSD scan. Per (batch, head) with a P×N state h:
      h_t = exp(dt_t · A) h_{t-1} + dt_t x_t B_tᵀ      y_t = h_t C_t
  dt must already be positive (softplus(dt + dt_bias)) and A negative (-exp(A_log)); the
  D skip and the z gate are the caller's. Head h uses B/C group h // (H // G).
  T needs not be a multiple of chunk_size: the tail is padded with dt = 0, which leaves the
  state unchanged. chunk_size: a multiple of 8 (TPU sublanes); with impl "auto" or
  "pallas" also a power of two >= 16 (Triton tiles; the CUDA branch is traced everywhere).
  Accumulates in promote_types(dtype, float32).

  Returns (y_BTHP in x's dtype, final_state_BHPN in the accumulation dtype).
  """
  _dispatch.check_impl(impl)
  _validate(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, initial_state_BHPN, chunk_size)
  Bsz, _, H, P = x_BTHP.shape
  N = B_BTGN.shape[-1]
  h0 = initial_state_BHPN
  if h0 is None:
    h0 = jnp.zeros((Bsz, H, P, N), acc_dtype(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN))
  tpu = lambda *a, interpret: _ssd_pallas(
      (pallas_tpu.ssd_fwd, pallas_tpu.ssd_bwd), chunk_size, interpret, *a)
  gpu = lambda *a, interpret: _ssd_pallas(
      (pallas_gpu.ssd_fwd, pallas_gpu.ssd_bwd), chunk_size, interpret, *a)
  xla = functools.partial(ssd_chunked, chunk_size=chunk_size)
  if impl in ("auto", "pallas"):
    pallas_gpu.check_chunk(chunk_size)   # the Triton branch is traced on every platform
  fn = _dispatch.select(impl, xla=xla, tpu=tpu, gpu=gpu)
  return fn(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0)


def _validate(x, dt, A, B, C, h0, chunk_size):
  if x.ndim != 4:
    raise ValueError(f"x_BTHP must be [B, T, H, P], got shape {x.shape}")
  Bsz, T, H, P = x.shape
  if dt.shape != (Bsz, T, H):
    raise ValueError(f"dt_BTH must have shape {(Bsz, T, H)}, got {dt.shape}")
  if A.shape != (H,):
    raise ValueError(f"A_H must have shape {(H,)}, got {A.shape}")
  if B.ndim != 4 or B.shape[:2] != (Bsz, T) or C.shape != B.shape:
    raise ValueError(f"B_BTGN and C_BTGN must both be [{Bsz}, {T}, G, N], got {B.shape} "
                     f"and {C.shape}")
  G, N = B.shape[2:]
  if G < 1 or H % G:
    raise ValueError(f"the number of heads H={H} must be a multiple of the groups G={G}")
  if h0 is not None and h0.shape != (Bsz, H, P, N):
    raise ValueError(f"initial_state_BHPN must have shape {(Bsz, H, P, N)}, got {h0.shape}")
  if T < 1:
    raise ValueError(f"sequence length T={T} must be >= 1")
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
  if chunk_size % 8:
    raise ValueError(f"chunk_size={chunk_size} must be a multiple of 8 (TPU sublane tiling)")


def _layout(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, L):
  """The kernels' layout: heads before time, T padded to a multiple of L, and
  a = cumsum(dt·A) restarted at every chunk (TPU Pallas cannot lower cumsum)."""
  acc = acc_dtype(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN)
  T = x_BTHP.shape[1]
  x, dt, Bm, Cm = pad_time(T, L, x_BTHP, dt_BTH.astype(acc), B_BTGN, C_BTGN)
  Bsz, Tp, H, _ = x.shape
  dt_BHT = dt.transpose(0, 2, 1)
  a_BHT = jnp.cumsum((dt_BHT * A_H.astype(acc)[:, None]).reshape(Bsz, H, Tp // L, L),
                     axis=-1).reshape(Bsz, H, Tp)
  heads_first = lambda a: a.transpose(0, 2, 1, 3)
  return heads_first(x), dt_BHT, a_BHT, heads_first(Bm), heads_first(Cm)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _ssd_pallas(kernels, chunk, interpret, x, dt, A, B, C, h0):
  return _ssd_pallas_fwd(kernels, chunk, interpret, x, dt, A, B, C, h0)[0]


def _ssd_pallas_fwd(kernels, chunk, interpret, x, dt, A, B, C, h0):
  fwd, _ = kernels
  acc = acc_dtype(x, dt, A, B, C)
  y_BHTP, hT, hc = fwd(*_layout(x, dt, A, B, C, chunk), h0.astype(acc), chunk=chunk,
                       interpret=interpret)
  y_BTHP = y_BHTP.transpose(0, 2, 1, 3)[:, :x.shape[1]]
  return (y_BTHP, hT), (x, dt, A, B, C, h0, hc)


def _ssd_pallas_bwd(kernels, chunk, interpret, res, cotangents):
  _, bwd = kernels
  x, dt, A, B, C, h0, hc = res
  dy_BTHP, dhT = cotangents
  Bsz, T, H, P = x.shape
  G, N = B.shape[2:]
  acc = hc.dtype
  (dy,) = pad_time(T, chunk, dy_BTHP)
  lay = _layout(x, dt, A, B, C, chunk)
  dx, dB, dC, ddt, da, dh0 = bwd(*lay, hc, dy.transpose(0, 2, 1, 3).astype(x.dtype),
                                 dhT.astype(acc), chunk=chunk, interpret=interpret)
  Tp = dx.shape[2]
  # a = in-chunk cumsum of dt·A, so d(dt·A) is the reverse in-chunk cumsum of da.
  da4 = da.reshape(Bsz, H, Tp // chunk, chunk)
  d_dtA = jnp.flip(jnp.cumsum(jnp.flip(da4, -1), -1), -1).reshape(Bsz, H, Tp)
  dt_BHT = lay[1]
  ddt = ddt + A.astype(acc)[:, None] * d_dtA
  dA = jnp.sum(dt_BHT * d_dtA, axis=(0, 2))
  per_group = lambda g: g.reshape(Bsz, G, H // G, Tp, N).sum(2).transpose(0, 2, 1, 3)[:, :T]
  return (dx.transpose(0, 2, 1, 3)[:, :T].astype(x.dtype),
          ddt.transpose(0, 2, 1)[:, :T].astype(dt.dtype),
          dA.astype(A.dtype),
          per_group(dB).astype(B.dtype),
          per_group(dC).astype(C.dtype),
          dh0.astype(h0.dtype))


_ssd_pallas.defvjp(_ssd_pallas_fwd, _ssd_pallas_bwd)
