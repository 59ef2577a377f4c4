"""Pallas Mosaic-TPU flash attention, softmax and sigmoid kinds: forward, dK/dV and dQ kernels.

Layout: the wrappers transpose to [B, H, T, D] so every block ends in (rows, D) and obeys the TPU
(8, 128) rule (D is taken whole). Each grid puts its reduction axis last, "arbitrary", carrying the
running state in VMEM scratch; the other axes are "parallel" (megacore may split them).
Per-row statistics (m, l, lse, delta) and query segment ids are lane-replicated [.., T, 128], key
segment ids sublane-replicated [.., 8, S], as in jax's bundled TPU kernels.
Blocks outside the causal/window band are skipped: the index_map clamps the block index into the
visible range (a repeated index issues no new DMA) and `pl.when` skips the compute.
The tile math (mask, online softmax, dS) is kernels/_attn_common.py, shared with the Triton kernels.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels._attn_common import (MASK_VALUE, Spec, acc_dtype, dot, finish_softmax, idiv,
                                  kv_block_range,
                                  online_softmax, pad_to, q_block_range, split_refs, tile_dlogits,
                                  tile_logits, tile_mask, tile_probs)

LANES, SUBLANES = 128, 8
# 512x512: a f32 logit tile is 1 MiB, so even the backward's ~5 live tiles plus double-buffered
# blocks fit v5e's 16 MiB default scoped VMEM; smaller tiles re-read K/V (forward) and the
# lane-replicated lse/delta (backward) more often: see the roofline in docs/kernels_attention.md.
FWD_BLOCK, BWD_BLOCK = 512, 512


def _round_up(n, m):
  return -(-n // m) * m


def blocks(T, S, block_q, block_k, default):
  """(bq, bk): bq rows are sublanes (multiple of 8), bk is the lane dim of every tile (x128)."""
  bq = block_q or min(default, _round_up(T, SUBLANES))
  bk = block_k or min(default, _round_up(S, LANES))
  if bq % SUBLANES or bk % LANES:
    raise ValueError(f"TPU attention blocks must be block_q % {SUBLANES} == 0 and block_k % "
                     f"{LANES} == 0, got block_q={bq}, block_k={bk}")
  return bq, bk


def _clamp(j, lo, hi, n):
  """Block index j moved into the visible range [lo, hi) (and into [0, n))."""
  return jnp.minimum(jnp.maximum(jnp.minimum(jnp.maximum(j, lo), hi - 1), 0), n - 1)


def _segs(qs_ref, ks_ref, bk):
  if qs_ref is None:
    return None, None
  return jnp.tile(qs_ref[...], (1, bk // LANES)), ks_ref[...][:1, :]   # [bq,bk], [1,bk]


def _fwd_kernel(*refs, spec: Spec, bq, bk, nk, seg):
  softmax = spec.kind == "softmax"
  (q_ref, k_ref, v_ref), (qs_ref, ks_ref), (o_ref,), (lse_ref, m_scr, l_scr), (acc_scr,) = (
      split_refs(refs, [(3, True), (2, seg), (1, True), (3, softmax), (1, True)]))
  qi, kj = pl.program_id(2), pl.program_id(3)
  acc = acc_scr.dtype

  @pl.when(kj == 0)
  def _init():
    acc_scr[...] = jnp.zeros(acc_scr.shape, acc)
    if softmax:
      m_scr[...] = jnp.full(m_scr.shape, MASK_VALUE, acc)
      l_scr[...] = jnp.zeros(l_scr.shape, acc)

  lo, hi = kv_block_range(qi, bq, bk, nk, spec)

  @pl.when((kj >= lo) & (kj < hi))
  def _tile():
    v = v_ref[...]
    s, _ = tile_logits(spec, dot(q_ref[...], k_ref[...], acc, trans_b=True))
    mask = tile_mask(spec, qi * bq, kj * bk, bq, bk, *_segs(qs_ref, ks_ref, bk))
    if softmax:
      p, alpha, m, l = online_softmax(spec, s, mask, m_scr[...][:, :1], l_scr[...][:, :1])
      m_scr[...] = jnp.broadcast_to(m, m_scr.shape)
      l_scr[...] = jnp.broadcast_to(l, l_scr.shape)
      acc_scr[...] = alpha * acc_scr[...] + dot(p.astype(v.dtype), v, acc)
    else:
      acc_scr[...] += dot(tile_probs(spec, s, mask, None).astype(v.dtype), v, acc)

  @pl.when(kj == nk - 1)
  def _out():
    o = acc_scr[...]
    if softmax:
      o, lse = finish_softmax(m_scr[...][:, :1], l_scr[...][:, :1], o)
      lse_ref[...] = jnp.broadcast_to(lse, lse_ref.shape)
    o_ref[...] = o.astype(o_ref.dtype)


def _bwd_tile(spec, q, k, v, do, lse_ref, delta_ref, mask_args, acc):
  """Recomputes one tile: returns (p, ds) with ds = dL/d(q.k)."""
  s, t = tile_logits(spec, dot(q, k, acc, trans_b=True))
  mask = tile_mask(spec, *mask_args)
  if spec.kind == "sigmoid":
    p = tile_probs(spec, s, mask, None)
    return p, tile_dlogits(spec, p, t, dot(do, v, acc, trans_b=True), None)
  p = tile_probs(spec, s, mask, lse_ref[...][:, :1])
  return p, tile_dlogits(spec, p, t, dot(do, v, acc, trans_b=True), delta_ref[...][:, :1])


def _dkdv_kernel(*refs, spec: Spec, bq, bk, nq, steps, seg):
  """Grid (B, K, nk, G*nq): one KV block accumulates over the q blocks of all G query heads."""
  softmax = spec.kind == "softmax"
  (q_ref, k_ref, v_ref, do_ref), (lse_ref, delta_ref), (qs_ref, ks_ref), (dk_ref, dv_ref), (
      dk_scr, dv_scr) = split_refs(refs, [(4, True), (2, softmax), (2, seg), (2, True), (2, True)])
  kj, r = pl.program_id(2), pl.program_id(3)
  qi = jax.lax.rem(r, jnp.int32(nq))
  acc = dk_scr.dtype

  @pl.when(r == 0)
  def _init():
    dk_scr[...] = jnp.zeros(dk_scr.shape, acc)
    dv_scr[...] = jnp.zeros(dv_scr.shape, acc)

  lo, hi = q_block_range(kj, bq, bk, nq, spec)

  @pl.when((qi >= lo) & (qi < hi))
  def _tile():
    q, do = q_ref[...], do_ref[...]
    p, ds = _bwd_tile(spec, q, k_ref[...], v_ref[...], do, lse_ref, delta_ref,
                      (qi * bq, kj * bk, bq, bk, *_segs(qs_ref, ks_ref, bk)), acc)
    dv_scr[...] += dot(p.astype(do.dtype), do, acc, trans_a=True)
    dk_scr[...] += dot(ds.astype(q.dtype), q, acc, trans_a=True)

  @pl.when(r == steps - 1)
  def _out():
    dk_ref[...] = dk_scr[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _dq_kernel(*refs, spec: Spec, bq, bk, nk, seg):
  """Grid (B, H, nq, nk): one q block accumulates dQ over the KV blocks it sees."""
  softmax = spec.kind == "softmax"
  (q_ref, k_ref, v_ref, do_ref), (lse_ref, delta_ref), (qs_ref, ks_ref), (dq_ref,), (dq_scr,) = (
      split_refs(refs, [(4, True), (2, softmax), (2, seg), (1, True), (1, True)]))
  qi, kj = pl.program_id(2), pl.program_id(3)
  acc = dq_scr.dtype

  @pl.when(kj == 0)
  def _init():
    dq_scr[...] = jnp.zeros(dq_scr.shape, acc)

  lo, hi = kv_block_range(qi, bq, bk, nk, spec)

  @pl.when((kj >= lo) & (kj < hi))
  def _tile():
    k = k_ref[...]
    _, ds = _bwd_tile(spec, q_ref[...], k, v_ref[...], do_ref[...], lse_ref, delta_ref,
                      (qi * bq, kj * bk, bq, bk, *_segs(qs_ref, ks_ref, bk)), acc)
    dq_scr[...] += dot(ds.astype(k.dtype), k, acc)

  @pl.when(kj == nk - 1)
  def _out():
    dq_ref[...] = dq_scr[...].astype(dq_ref.dtype)


def _prep(q, k, v, q_seg, kv_seg, bq, bk):
  """[B,T,H,D] -> padded [B,H,Tp,D]; segment ids -> lane/sublane-replicated blocks."""
  qt = pad_to(q.transpose(0, 2, 1, 3), 2, bq)
  kt, vt = (pad_to(x.transpose(0, 2, 1, 3), 2, bk) for x in (k, v))
  segs = []
  if q_seg is not None:
    B, Tp, Sp = q.shape[0], qt.shape[2], kt.shape[2]
    segs = [jnp.broadcast_to(pad_to(q_seg, 1, bq)[:, :, None], (B, Tp, LANES)),
            jnp.broadcast_to(pad_to(kv_seg, 1, bk)[:, None, :], (B, SUBLANES, Sp))]
  return qt, kt, vt, segs


def _lanes(x_BHT, bq):   # per-row stat [B,H,T] -> padded, lane-replicated [B,H,Tp,128]
  x = pad_to(x_BHT, 2, bq)
  return jnp.broadcast_to(x[..., None], (*x.shape, LANES))


def _params(n_parallel):
  return pltpu.CompilerParams(dimension_semantics=("parallel",) * n_parallel + ("arbitrary",))


def fwd(spec: Spec, q, k, v, q_seg, kv_seg, *, block_q=None, block_k=None, interpret=False):
  """q [B,T,H,D], k/v [B,S,K,D] -> (o [B,T,H,D], lse [B,H,T] or None for sigmoid)."""
  B, T, H, D = q.shape
  K, G = k.shape[2], H // k.shape[2]
  bq, bk = blocks(T, spec.S, block_q, block_k, FWD_BLOCK)
  qt, kt, vt, segs = _prep(q, k, v, q_seg, kv_seg, bq, bk)
  Tp, nq, nk = qt.shape[2], qt.shape[2] // bq, kt.shape[2] // bk
  kv_j = lambda i, j: _clamp(j, *kv_block_range(i, bq, bk, nk, spec), nk)
  in_specs = [pl.BlockSpec((None, None, bq, D), lambda b, h, i, j: (b, h, i, 0)),
              pl.BlockSpec((None, None, bk, D), lambda b, h, i, j: (b, idiv(h, G), kv_j(i, j), 0)),
              pl.BlockSpec((None, None, bk, D), lambda b, h, i, j: (b, idiv(h, G), kv_j(i, j), 0))]
  if segs:
    in_specs += [pl.BlockSpec((None, bq, LANES), lambda b, h, i, j: (b, i, 0)),
                 pl.BlockSpec((None, SUBLANES, bk), lambda b, h, i, j: (b, 0, kv_j(i, j)))]
  acc = acc_dtype(q.dtype)
  softmax = spec.kind == "softmax"
  out_shape = [jax.ShapeDtypeStruct((B, H, Tp, D), q.dtype)]
  out_specs = [pl.BlockSpec((None, None, bq, D), lambda b, h, i, j: (b, h, i, 0))]
  scratch = [pltpu.VMEM((bq, D), acc)]
  if softmax:
    out_shape.append(jax.ShapeDtypeStruct((B, H, Tp, LANES), acc))
    out_specs.append(pl.BlockSpec((None, None, bq, LANES), lambda b, h, i, j: (b, h, i, 0)))
    scratch = [pltpu.VMEM((bq, LANES), acc)] * 2 + scratch
  outs = pl.pallas_call(
      functools.partial(_fwd_kernel, spec=spec, bq=bq, bk=bk, nk=nk, seg=bool(segs)),
      out_shape=out_shape, grid=(B, H, nq, nk), in_specs=in_specs, out_specs=out_specs,
      scratch_shapes=scratch, compiler_params=_params(3), interpret=interpret,
      name=f"{spec.kind}_attention_fwd")(qt, kt, vt, *segs)
  o = outs[0][:, :, :T].transpose(0, 2, 1, 3)
  return o, (outs[1][:, :, :T, 0] if softmax else None)


def bwd(spec: Spec, q, k, v, q_seg, kv_seg, o, lse, do, *, block_q=None, block_k=None,
        interpret=False):
  """FA2 backward: (dq, dk, dv) in the input layouts/dtypes. delta = rowsum(dO*O) is plain jnp."""
  B, T, H, D = q.shape
  K, G = k.shape[2], H // k.shape[2]
  bq, bk = blocks(T, spec.S, block_q, block_k, BWD_BLOCK)
  qt, kt, vt, segs = _prep(q, k, v, q_seg, kv_seg, bq, bk)
  dot_ = pad_to(do.transpose(0, 2, 1, 3), 2, bq)
  Tp, Sp, nq, nk = qt.shape[2], kt.shape[2], qt.shape[2] // bq, kt.shape[2] // bk
  acc = acc_dtype(q.dtype)
  stats = []
  if spec.kind == "softmax":
    delta = jnp.sum(do.astype(acc) * o.astype(acc), axis=-1).transpose(0, 2, 1)
    stats = [_lanes(lse, bq), _lanes(delta, bq)]
  seg = bool(segs)

  # dK, dV: grid (B, K, nk, G*nq); step r covers query head k*G + r // nq, q block r % nq.
  q_i = lambda j, r: _clamp(jax.lax.rem(r, jnp.int32(nq)), *q_block_range(j, bq, bk, nq, spec), nq)
  row = lambda b, h, j, r: (b, h * G + idiv(r, nq), q_i(j, r), 0)
  kv_blk = pl.BlockSpec((None, None, bk, D), lambda b, h, j, r: (b, h, j, 0))
  in_specs = [pl.BlockSpec((None, None, bq, D), row), kv_blk, kv_blk,
              pl.BlockSpec((None, None, bq, D), row)]
  in_specs += [pl.BlockSpec((None, None, bq, LANES), row)] * len(stats)
  if seg:
    in_specs += [pl.BlockSpec((None, bq, LANES), lambda b, h, j, r: (b, q_i(j, r), 0)),
                 pl.BlockSpec((None, SUBLANES, bk), lambda b, h, j, r: (b, 0, j))]
  dk, dv = pl.pallas_call(
      functools.partial(_dkdv_kernel, spec=spec, bq=bq, bk=bk, nq=nq, steps=G * nq, seg=seg),
      out_shape=[jax.ShapeDtypeStruct((B, K, Sp, D), k.dtype)] * 2, grid=(B, K, nk, G * nq),
      in_specs=in_specs, out_specs=[kv_blk, kv_blk],
      scratch_shapes=[pltpu.VMEM((bk, D), acc)] * 2, compiler_params=_params(3),
      interpret=interpret, name=f"{spec.kind}_attention_dkdv")(qt, kt, vt, dot_, *stats, *segs)

  # dQ: grid (B, H, nq, nk).
  kv_j = lambda i, j: _clamp(j, *kv_block_range(i, bq, bk, nk, spec), nk)
  q_blk = pl.BlockSpec((None, None, bq, D), lambda b, h, i, j: (b, h, i, 0))
  kv_blk = pl.BlockSpec((None, None, bk, D), lambda b, h, i, j: (b, idiv(h, G), kv_j(i, j), 0))
  in_specs = [q_blk, kv_blk, kv_blk, q_blk]
  in_specs += [pl.BlockSpec((None, None, bq, LANES), lambda b, h, i, j: (b, h, i, 0))] * len(stats)
  if seg:
    in_specs += [pl.BlockSpec((None, bq, LANES), lambda b, h, i, j: (b, i, 0)),
                 pl.BlockSpec((None, SUBLANES, bk), lambda b, h, i, j: (b, 0, kv_j(i, j)))]
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, spec=spec, bq=bq, bk=bk, nk=nk, seg=seg),
      out_shape=jax.ShapeDtypeStruct((B, H, Tp, D), q.dtype), grid=(B, H, nq, nk),
      in_specs=in_specs, out_specs=q_blk, scratch_shapes=[pltpu.VMEM((bq, D), acc)],
      compiler_params=_params(3), interpret=interpret,
      name=f"{spec.kind}_attention_dq")(qt, kt, vt, dot_, *stats, *segs)

  untile = lambda x, n: x[:, :, :n].transpose(0, 2, 1, 3)
  return untile(dq, T), untile(dk, spec.S), untile(dv, spec.S)
