"""Pallas Triton (GPU) kernels for the chunked delta rule: WY inverse, forward, backward.

Same interface and layout as pallas_tpu.py; the chunk math is the shared kernel_body. Differences:
  * Triton has no sequential grid axis or scratch, so forward/backward run one program per (b, h)
    holding the state in registers across an in-kernel fori_loop over chunks (FLA's
    chunk_delta_h does the same); the WY kernel is one program per (b, h, chunk).
  * Every loaded array must have a power-of-two size and tl.dot needs dims >= 16: head dims are
    zero-padded to max(16, next power of two) here and sliced back (zero columns of q/k/v/state
    stay zero through the recurrence, so this is exact). C is 16, 32 or 64.
  * compiler_params=pltriton.CompilerParams(...) is always passed: without it jax 0.10.2 lowers
    to Mosaic GPU, not Triton.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels.delta_rule import kernel_body as body

# num_warps unmeasured (no GPU here): 4 like FLA's chunk kernels; the backward body keeps ~10
# CxC/CxK tiles live, so it gets 8. num_stages=1: with 2, Triton's pipeliner double-buffers the
# chunk loads of the fori_loops in shared memory, which at K = V = 128 overflows an H100's 227 KiB.
_WY = pltriton.CompilerParams(num_warps=4, num_stages=1)
_FWD = pltriton.CompilerParams(num_warps=4, num_stages=1)
_BWD = pltriton.CompilerParams(num_warps=8, num_stages=1)

# Dot precision when compiled (the interpreter runs on CPU, which has no TF32: there it is f32).
# IEEE f32 dots (Precision.HIGHEST) are FMA loops off the tensor cores: the forward at K = V = 128
# took 80-130 s to compile and the backward overflowed shared memory. Three TF32 passes (~f32
# accuracy) for WY and the forward; the backward's operands tripled overflow shared memory too, so
# it runs single-pass TF32 (10-bit mantissa; FLA's backward runs bf16 dots).
_PREC_FWD = jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3
_PREC_BWD = jax.lax.Precision.DEFAULT


def _prec(prec, interpret):
  return body.HIGHEST if interpret else prec


def _p2(d: int) -> int:
  return max(16, 1 << (d - 1).bit_length())


def _pad_last(x, d, axis=-1):
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, d - x.shape[axis])
  return jnp.pad(x, pad)


def _chunk_spec(*block):
  return pl.BlockSpec((None, None, None) + block, lambda b, h, n: (b, h, n, 0, 0))


def _seq_spec(N, *block):
  """All chunks of one (b, h): the kernel walks them itself."""
  return pl.BlockSpec((None, None, N) + block, lambda b, h: (b, h, 0, 0, 0))


def _state_spec(K, V):
  return pl.BlockSpec((None, None, K, V), lambda b, h: (b, h, 0, 0))


def _cols_rows(beta_BHNC, gc_BHNC):
  return beta_BHNC[..., None], gc_BHNC[..., None], gc_BHNC[..., None, :]


# ------------------------------------------------------------------------------------------------


def _wy_kernel(k_ref, b_ref, gc_ref, gr_ref, x_ref, *, prec):
  acc = x_ref.dtype
  x_ref[...] = body.wy_inverse(k_ref[...].astype(acc), b_ref[...].astype(acc),
                               gc_ref[...].astype(acc), gr_ref[...].astype(acc), prec)


def wy_inverse(k, beta_BHNC, gc_BHNC, *, interpret=False):
  """X = ((I + A)^-1)^T per chunk, [B,H,N,C,C] in the accumulation dtype."""
  B, H, N, C, K = k.shape
  acc = jnp.promote_types(k.dtype, jnp.float32)
  Kp = _p2(K)
  b, gc, gr = _cols_rows(beta_BHNC, gc_BHNC)
  return pl.pallas_call(
      functools.partial(_wy_kernel, prec=_prec(_PREC_FWD, interpret)), grid=(B, H, N),
      in_specs=[_chunk_spec(C, Kp), _chunk_spec(C, 1), _chunk_spec(C, 1), _chunk_spec(1, C)],
      out_specs=_chunk_spec(C, C),
      out_shape=jax.ShapeDtypeStruct((B, H, N, C, C), acc),
      compiler_params=_WY, interpret=interpret, name="delta_rule_wy_gpu")(
          _pad_last(k, Kp), b, gc, gr)


# ------------------------------------------------------------------------------------------------


def _fwd_kernel(q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, x_ref, s0_ref, o_ref, h_ref, sT_ref,
                *, scale, prec):
  acc = sT_ref.dtype

  def chunk(n, s_KV):
    h_ref[n] = s_KV
    o_CV, s_KV = body.chunk_forward(
        q_ref[n].astype(acc), k_ref[n].astype(acc), v_ref[n].astype(acc), b_ref[n].astype(acc),
        gc_ref[n].astype(acc), gr_ref[n].astype(acc), x_ref[n], s_KV, scale, prec)
    o_ref[n] = o_CV.astype(o_ref.dtype)
    return s_KV

  sT_ref[...] = jax.lax.fori_loop(0, q_ref.shape[0], chunk, s0_ref[...].astype(acc))


def forward(q, k, v, beta_BHNC, gc_BHNC, x, s0_BHKV, *, scale, interpret=False):
  """Returns o [B,H,N,C,V] (v.dtype), h [B,H,N,K,V] (state entering each chunk), final state."""
  B, H, N, C, K = q.shape
  V = v.shape[-1]
  Kp, Vp = _p2(K), _p2(V)
  acc = x.dtype
  b, gc, gr = _cols_rows(beta_BHNC, gc_BHNC)
  s = lambda *blk: _seq_spec(N, *blk)
  o, h, sT = pl.pallas_call(
      functools.partial(_fwd_kernel, scale=scale, prec=_prec(_PREC_FWD, interpret)), grid=(B, H),
      in_specs=[s(C, Kp), s(C, Kp), s(C, Vp), s(C, 1), s(C, 1), s(1, C), s(C, C),
                _state_spec(Kp, Vp)],
      out_specs=[s(C, Vp), s(Kp, Vp), _state_spec(Kp, Vp)],
      out_shape=[jax.ShapeDtypeStruct((B, H, N, C, Vp), v.dtype),
                 jax.ShapeDtypeStruct((B, H, N, Kp, Vp), acc),
                 jax.ShapeDtypeStruct((B, H, Kp, Vp), acc)],
      compiler_params=_FWD, interpret=interpret, name="delta_rule_fwd_gpu")(
          _pad_last(q, Kp), _pad_last(k, Kp), _pad_last(v, Vp), b, gc, gr, x,
          _pad_last(_pad_last(s0_BHKV, Kp, -2), Vp))
  # h stays padded: it only feeds backward(), which pads everything the same way.
  return o[..., :V], h, sT[..., :K, :V]


# ------------------------------------------------------------------------------------------------


def _bwd_kernel(q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, x_ref, h_ref, do_ref, dsT_ref,
                dq_ref, dk_ref, dv_ref, db_ref, dgc_ref, dgr_ref, ds0_ref, *, scale, prec):
  acc = ds0_ref.dtype
  N = q_ref.shape[0]

  def chunk(i, ds_KV):
    n = N - 1 - i
    dq, dk, dv, db, dgc, dgr, ds_KV = body.chunk_backward(
        q_ref[n].astype(acc), k_ref[n].astype(acc), v_ref[n].astype(acc), b_ref[n].astype(acc),
        gc_ref[n].astype(acc), gr_ref[n].astype(acc), x_ref[n], h_ref[n],
        do_ref[n].astype(acc), ds_KV, scale, prec)
    for ref, val in ((dq_ref, dq), (dk_ref, dk), (dv_ref, dv), (db_ref, db), (dgc_ref, dgc),
                     (dgr_ref, dgr)):
      ref[n] = val.astype(ref.dtype)
    return ds_KV

  ds0_ref[...] = jax.lax.fori_loop(0, N, chunk, dsT_ref[...].astype(acc))


def backward(q, k, v, beta_BHNC, gc_BHNC, x, h, do, dsT_BHKV, *, scale, interpret=False):
  """Returns dq, dk, dv, dbeta [B,H,N,C], dgc [B,H,N,C], ds0 [B,H,K,V] (all in x.dtype)."""
  B, H, N, C, K = q.shape
  V = v.shape[-1]
  Kp, Vp = _p2(K), _p2(V)
  acc = x.dtype
  b, gc, gr = _cols_rows(beta_BHNC, gc_BHNC)
  s = lambda *blk: _seq_spec(N, *blk)
  sds = lambda *shp: jax.ShapeDtypeStruct((B, H, N) + shp, acc)
  dq, dk, dv, db, dgc, dgr, ds0 = pl.pallas_call(
      functools.partial(_bwd_kernel, scale=scale, prec=_prec(_PREC_BWD, interpret)), grid=(B, H),
      in_specs=[s(C, Kp), s(C, Kp), s(C, Vp), s(C, 1), s(C, 1), s(1, C), s(C, C), s(Kp, Vp),
                s(C, Vp), _state_spec(Kp, Vp)],
      out_specs=[s(C, Kp), s(C, Kp), s(C, Vp), s(C, 1), s(C, 1), s(1, C), _state_spec(Kp, Vp)],
      out_shape=[sds(C, Kp), sds(C, Kp), sds(C, Vp), sds(C, 1), sds(C, 1), sds(1, C),
                 jax.ShapeDtypeStruct((B, H, Kp, Vp), acc)],
      compiler_params=_BWD, interpret=interpret, name="delta_rule_bwd_gpu")(
          _pad_last(q, Kp), _pad_last(k, Kp), _pad_last(v, Vp), b, gc, gr, x, h,
          _pad_last(do, Vp), _pad_last(_pad_last(dsT_BHKV, Kp, -2), Vp))
  return (dq[..., :K], dk[..., :K], dv[..., :V], db[..., 0], dgc[..., 0] + dgr[..., 0, :],
          ds0[..., :K, :V])
