"""Public Mamba-1 selective scan: validation, custom_vjp glue around the Pallas kernels, dispatch."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import _dispatch
from kernels.selective_scan import pallas_gpu, pallas_tpu
from kernels.selective_scan.reference import acc_dtype, selective_scan_chunked


def selective_scan(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN, *, initial_state_BDN=None,
                   chunk_size=64, impl="auto"):
  """Mamba-1 selective scan, per channel d and state index n:
      x_t = exp(delta_t A) ∘ x_{t-1} + (delta_t u_t) B_t      y_t = Σ_n x_t C_t
  delta must already be positive (softplus(delta + bias)); the D skip and the SiLU(z)
  gate are the caller's. T needs not be a multiple of chunk_size: the tail is padded with
  delta = 0, which leaves the state unchanged. chunk_size is the recompute granularity of
  the backward (states are saved once per chunk). Accumulates in promote_types(dtype, f32).

  Returns (y_BTD in u's dtype, final_state_BDN in the accumulation dtype).
  """
  _dispatch.check_impl(impl)
  _validate(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN, initial_state_BDN, chunk_size)
  Bsz, _, D = u_BTD.shape
  h0 = initial_state_BDN
  if h0 is None:
    h0 = jnp.zeros((Bsz, D, A_DN.shape[1]), acc_dtype(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN))
  tpu = lambda *a, interpret: _scan_pallas(
      (pallas_tpu.scan_fwd, pallas_tpu.scan_bwd), chunk_size, interpret, *a)
  gpu = lambda *a, interpret: _scan_pallas(
      (pallas_gpu.scan_fwd, pallas_gpu.scan_bwd), chunk_size, interpret, *a)
  xla = functools.partial(selective_scan_chunked, chunk_size=chunk_size)
  fn = _dispatch.select(impl, xla=xla, tpu=tpu, gpu=gpu)
  return fn(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN, h0)


def _validate(u, delta, A, B, C, h0, chunk_size):
  if u.ndim != 3:
    raise ValueError(f"u_BTD must be [B, T, D], got shape {u.shape}")
  Bsz, T, D = u.shape
  if T < 1:
    raise ValueError(f"sequence length T={T} must be >= 1")
  if delta.shape != u.shape:
    raise ValueError(f"delta_BTD must have u's shape {u.shape}, got {delta.shape}")
  if A.ndim != 2 or A.shape[0] != D:
    raise ValueError(f"A_DN must be [{D}, N], got shape {A.shape}")
  N = A.shape[1]
  for name, v in (("B_BTN", B), ("C_BTN", C)):
    if v.shape != (Bsz, T, N):
      raise ValueError(f"{name} must have shape {(Bsz, T, N)}, got {v.shape}")
  if h0 is not None and h0.shape != (Bsz, D, N):
    raise ValueError(f"initial_state_BDN must have shape {(Bsz, D, N)}, got {h0.shape}")
  if not isinstance(chunk_size, int) or chunk_size < 8 or chunk_size % 8:
    raise ValueError(f"chunk_size must be a positive multiple of 8 (TPU sublane tiling), "
                     f"got {chunk_size!r}")


def _pad_time(T, L, *arrays):
  """Zero padding of time up to a multiple of L: delta = 0 steps leave the state as is."""
  return [jnp.pad(a, [(0, 0), (0, -T % L)] + [(0, 0)] * (a.ndim - 2)) for a in arrays]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _scan_pallas(kernels, chunk, interpret, u, delta, A, B, C, h0):
  return _scan_pallas_fwd(kernels, chunk, interpret, u, delta, A, B, C, h0)[0]


def _scan_pallas_fwd(kernels, chunk, interpret, u, delta, A, B, C, h0):
  fwd, _ = kernels
  acc = acc_dtype(u, delta, A, B, C)
  T = u.shape[1]
  up, dp, Bp, Cp = _pad_time(T, chunk, u, delta.astype(acc), B, C)
  y, hT, hc = fwd(up, dp, A.astype(acc), Bp, Cp, h0.astype(acc), chunk=chunk,
                  interpret=interpret)
  return (y[:, :T], hT), (u, delta, A, B, C, h0, hc)


def _scan_pallas_bwd(kernels, chunk, interpret, res, cotangents):
  _, bwd = kernels
  u, delta, A, B, C, h0, hc = res
  dy, dhT = cotangents
  acc = hc.dtype
  T = u.shape[1]
  up, dp, Bp, Cp, dyp = _pad_time(T, chunk, u, delta.astype(acc), B, C, dy)
  du, dd, dA, dB, dC, dh0 = bwd(up, dp, A.astype(acc), Bp, Cp, hc, dyp, dhT.astype(acc),
                                chunk=chunk, interpret=interpret)
  return (du[:, :T].astype(u.dtype), dd[:, :T].astype(delta.dtype), dA.astype(A.dtype),
          dB[:, :T].astype(B.dtype), dC[:, :T].astype(C.dtype), dh0.astype(h0.dtype))


_scan_pallas.defvjp(_scan_pallas_fwd, _scan_pallas_bwd)
