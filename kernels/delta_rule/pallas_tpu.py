"""Pallas Mosaic-TPU kernels for the chunked delta rule: WY inverse, forward, backward.

Layout (prepared by api.py): q, k [B,H,N,C,K], v [B,H,N,C,V], beta and gc [B,H,N,C] (gc = the
within-chunk cumsum of g), states [B,H,K,V]. Three kernels:
  wy_inverse  grid (B,H,N), all parallel: X = ((I + A)^-1)^T per chunk (the only residual that
              is not an input, as in FLA; the O(C^3) substitution is not redone in the backward).
  forward     grid (B,H,N), N "arbitrary": the state lives in a VMEM scratch across chunks;
              writes O, the state entering every chunk (h, for the backward) and the final state.
  backward    grid (B,H,N), N "arbitrary", chunks visited last to first: carries dS in scratch.
TPU block rule: the last two block dims are multiples of (8, 128) or the full dims. Chunk blocks
are (C, K) with C in {16, 32, 64} and K the full dim; per-token scalars are passed as columns
[.., C, 1] and rows [.., 1, C] (full last-two dims) rather than [.., C] (whose second-to-last
dim, N, would not be full).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels.delta_rule import kernel_body as body


def _spec(*block):
  """One chunk of one (b, h), chunks in order."""
  return pl.BlockSpec((None, None, None) + block, lambda b, h, n: (b, h, n, 0, 0))


def _rev_spec(N, *block):
  """One chunk of one (b, h), chunks last to first (the backward's reverse sweep)."""
  return pl.BlockSpec((None, None, None) + block, lambda b, h, n: (b, h, N - 1 - n, 0, 0))


def _state_spec(K, V):
  return pl.BlockSpec((None, None, K, V), lambda b, h, n: (b, h, 0, 0))


def _cols_rows(beta_BHNC, gc_BHNC):
  return beta_BHNC[..., None], gc_BHNC[..., None], gc_BHNC[..., None, :]


def _params(*semantics):
  return pltpu.CompilerParams(dimension_semantics=semantics)


# ------------------------------------------------------------------------------------------------


def _wy_kernel(k_ref, b_ref, gc_ref, gr_ref, x_ref):
  acc = x_ref.dtype
  x_ref[...] = body.wy_inverse(k_ref[...].astype(acc), b_ref[...].astype(acc),
                               gc_ref[...].astype(acc), gr_ref[...].astype(acc))


def wy_inverse(k, beta_BHNC, gc_BHNC, *, interpret=False):
  """X = ((I + A)^-1)^T per chunk, [B,H,N,C,C] in the accumulation dtype."""
  B, H, N, C, K = k.shape
  acc = jnp.promote_types(k.dtype, jnp.float32)
  b, gc, gr = _cols_rows(beta_BHNC, gc_BHNC)
  return pl.pallas_call(
      _wy_kernel, grid=(B, H, N),
      in_specs=[_spec(C, K), _spec(C, 1), _spec(C, 1), _spec(1, C)],
      out_specs=_spec(C, C),
      out_shape=jax.ShapeDtypeStruct((B, H, N, C, C), acc),
      compiler_params=_params("parallel", "parallel", "parallel"),
      interpret=interpret, name="delta_rule_wy_tpu")(k, b, gc, gr)


# ------------------------------------------------------------------------------------------------


def _fwd_kernel(q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, x_ref, s0_ref,
                o_ref, h_ref, sT_ref, s_scr, *, scale):
  n = pl.program_id(2)
  acc = s_scr.dtype

  @pl.when(n == 0)
  def _():
    s_scr[...] = s0_ref[...].astype(acc)

  s_KV = s_scr[...]
  h_ref[...] = s_KV
  o_CV, s_KV = body.chunk_forward(
      q_ref[...].astype(acc), k_ref[...].astype(acc), v_ref[...].astype(acc),
      b_ref[...].astype(acc), gc_ref[...].astype(acc), gr_ref[...].astype(acc), x_ref[...], s_KV,
      scale)
  o_ref[...] = o_CV.astype(o_ref.dtype)
  s_scr[...] = s_KV

  @pl.when(n == pl.num_programs(2) - 1)
  def _():
    sT_ref[...] = s_KV


def forward(q, k, v, beta_BHNC, gc_BHNC, x, s0_BHKV, *, scale, interpret=False):
  """Returns o [B,H,N,C,V] (v.dtype), h [B,H,N,K,V] (state entering each chunk), final state."""
  B, H, N, C, K = q.shape
  V = v.shape[-1]
  acc = x.dtype
  b, gc, gr = _cols_rows(beta_BHNC, gc_BHNC)
  return pl.pallas_call(
      functools.partial(_fwd_kernel, scale=scale), grid=(B, H, N),
      in_specs=[_spec(C, K), _spec(C, K), _spec(C, V), _spec(C, 1), _spec(C, 1), _spec(1, C),
                _spec(C, C), _state_spec(K, V)],
      out_specs=[_spec(C, V), _spec(K, V), _state_spec(K, V)],
      out_shape=[jax.ShapeDtypeStruct((B, H, N, C, V), v.dtype),
                 jax.ShapeDtypeStruct((B, H, N, K, V), acc),
                 jax.ShapeDtypeStruct((B, H, K, V), acc)],
      scratch_shapes=[pltpu.VMEM((K, V), acc)],
      compiler_params=_params("parallel", "parallel", "arbitrary"),
      interpret=interpret, name="delta_rule_fwd_tpu")(q, k, v, b, gc, gr, x, s0_BHKV)


# ------------------------------------------------------------------------------------------------


def _bwd_kernel(q_ref, k_ref, v_ref, b_ref, gc_ref, gr_ref, x_ref, h_ref, do_ref, dsT_ref,
                dq_ref, dk_ref, dv_ref, db_ref, dgc_ref, dgr_ref, ds0_ref, ds_scr, *, scale):
  n = pl.program_id(2)
  acc = ds_scr.dtype

  @pl.when(n == 0)
  def _():
    ds_scr[...] = dsT_ref[...].astype(acc)

  dq, dk, dv, db, dgc, dgr, ds_KV = body.chunk_backward(
      q_ref[...].astype(acc), k_ref[...].astype(acc), v_ref[...].astype(acc),
      b_ref[...].astype(acc), gc_ref[...].astype(acc), gr_ref[...].astype(acc),
      x_ref[...], h_ref[...], do_ref[...].astype(acc), ds_scr[...], scale)
  for ref, val in ((dq_ref, dq), (dk_ref, dk), (dv_ref, dv), (db_ref, db), (dgc_ref, dgc),
                   (dgr_ref, dgr)):
    ref[...] = val.astype(ref.dtype)
  ds_scr[...] = ds_KV

  @pl.when(n == pl.num_programs(2) - 1)
  def _():
    ds0_ref[...] = ds_KV


def backward(q, k, v, beta_BHNC, gc_BHNC, x, h, do, dsT_BHKV, *, scale, interpret=False):
  """Returns dq, dk, dv, dbeta [B,H,N,C], dgc [B,H,N,C], ds0 [B,H,K,V] (all in x.dtype)."""
  B, H, N, C, K = q.shape
  V = v.shape[-1]
  acc = x.dtype
  b, gc, gr = _cols_rows(beta_BHNC, gc_BHNC)
  rs = functools.partial(_rev_spec, N)
  sds = lambda *s: jax.ShapeDtypeStruct((B, H, N) + s, acc)
  dq, dk, dv, db, dgc, dgr, ds0 = pl.pallas_call(
      functools.partial(_bwd_kernel, scale=scale), grid=(B, H, N),
      in_specs=[rs(C, K), rs(C, K), rs(C, V), rs(C, 1), rs(C, 1), rs(1, C), rs(C, C), rs(K, V),
                rs(C, V), _state_spec(K, V)],
      out_specs=[rs(C, K), rs(C, K), rs(C, V), rs(C, 1), rs(C, 1), rs(1, C), _state_spec(K, V)],
      out_shape=[sds(C, K), sds(C, K), sds(C, V), sds(C, 1), sds(C, 1), sds(1, C),
                 jax.ShapeDtypeStruct((B, H, K, V), acc)],
      scratch_shapes=[pltpu.VMEM((K, V), acc)],
      compiler_params=_params("parallel", "parallel", "arbitrary"),
      interpret=interpret, name="delta_rule_bwd_tpu")(q, k, v, b, gc, gr, x, h, do, dsT_BHKV)
  return dq, dk, dv, db[..., 0], dgc[..., 0] + dgr[..., 0, :], ds0
