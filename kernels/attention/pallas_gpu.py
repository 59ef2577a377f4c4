"""Pallas Triton flash attention, softmax and sigmoid kinds: forward, dK/dV and dQ kernels.

Layout: [B, T, H, D] as given (no transposes); D is zero-padded to a power of two >= 16 and T/S to
the blocks, because every array Triton touches must have power-of-two sizes. The Triton backend has
no sequential grid axis or scratch, so each program owns one output block and loops over the
blocks it reduces with `fori_loop` (the bounds skip blocks outside the causal/window band):
  forward  grid (nq, B, H): one q block, loop over KV blocks (online softmax);
  dK/dV    grid (nk, B, K): one KV block, loop over the q blocks of its G query heads;
  dQ       grid (nq, B, H): one q block, loop over KV blocks.
Always compiled with pltriton.CompilerParams: without them jax 0.10.2 lowers to Mosaic GPU.
The tile math (mask, online softmax, dS) is kernels/_attn_common.py, shared with the TPU kernels.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels._attn_common import (MASK_VALUE, Spec, acc_dtype, dot, finish_softmax, idiv,
                                  kv_block_range,
                                  online_softmax, pad_to, q_block_range, split_refs, tile_dlogits,
                                  tile_logits, tile_mask, tile_probs)

# FA2-style Triton tiles: 64x64 keeps the backward's four [bq, bk] f32 tiles in registers at D=128.
FWD_BLOCK, BWD_BLOCK = 64, 64
MIN_BLOCK = 16   # tl.dot needs every dimension >= 16


def _pow2(n):
  return max(MIN_BLOCK, 1 << (n - 1).bit_length())


def blocks(T, S, block_q, block_k, default):
  bq = block_q or min(default, _pow2(T))
  bk = block_k or min(default, _pow2(S))
  for name, b in (("block_q", bq), ("block_k", bk)):
    if b < MIN_BLOCK or b & (b - 1):
      raise ValueError(f"GPU (Triton) attention needs {name} a power of two >= {MIN_BLOCK}, "
                       f"got {b}")
  return bq, bk


def _params(D):
  return pltriton.CompilerParams(num_warps=4 if D <= 64 else 8, num_stages=2)


def _at(start, size):
  return pl.ds(pl.multiple_of(start, size), size)


def _fwd_kernel(*refs, spec: Spec, bq, bk, nk, seg):
  softmax = spec.kind == "softmax"
  (q_ref, k_ref, v_ref), (qs_ref, ks_ref), (o_ref,), (lse_ref,) = split_refs(
      refs, [(3, True), (2, seg), (1, True), (1, softmax)])
  qi = pl.program_id(0)
  q = q_ref[...]
  acc = acc_dtype(q.dtype)
  q_seg = qs_ref[...][:, None] if seg else None

  def body(kj, carry):
    m, l, o = carry
    k0 = kj * bk
    v = v_ref[_at(k0, bk), :]
    s, _ = tile_logits(spec, dot(q, k_ref[_at(k0, bk), :], acc, trans_b=True))
    kv_seg = ks_ref[_at(k0, bk)][None, :] if seg else None
    mask = tile_mask(spec, qi * bq, k0, bq, bk, q_seg, kv_seg)
    if softmax:
      p, alpha, m, l = online_softmax(spec, s, mask, m, l)
      return m, l, alpha * o + dot(p.astype(v.dtype), v, acc)
    return m, l, o + dot(tile_probs(spec, s, mask, None).astype(v.dtype), v, acc)

  init = (jnp.full((bq, 1), MASK_VALUE, acc), jnp.zeros((bq, 1), acc),
          jnp.zeros(q.shape, acc))
  m, l, o = jax.lax.fori_loop(*kv_block_range(qi, bq, bk, nk, spec), body, init)
  if softmax:
    o, lse = finish_softmax(m, l, o)
    lse_ref[...] = lse[:, 0]
  o_ref[...] = o.astype(o_ref.dtype)


def _tile_grads(spec, q, k, v, do, lse, delta, q0, k0, q_seg, kv_seg, acc):
  """Recomputes one tile: returns (p, ds) with ds = dL/d(q.k)."""
  bq, bk = q.shape[0], k.shape[0]
  s, t = tile_logits(spec, dot(q, k, acc, trans_b=True))
  mask = tile_mask(spec, q0, k0, bq, bk, q_seg, kv_seg)
  p = tile_probs(spec, s, mask, lse)
  return p, tile_dlogits(spec, p, t, dot(do, v, acc, trans_b=True), delta)


def _dkdv_kernel(*refs, spec: Spec, bq, bk, nq, G, seg):
  softmax = spec.kind == "softmax"
  (q_ref, k_ref, v_ref, do_ref), (lse_ref, delta_ref), (qs_ref, ks_ref), (dk_ref, dv_ref) = (
      split_refs(refs, [(4, True), (2, softmax), (2, seg), (2, True)]))
  kj = pl.program_id(0)
  k, v = k_ref[...], v_ref[...]
  acc = acc_dtype(k.dtype)
  kv_seg = ks_ref[...][None, :] if seg else None
  lo, hi = q_block_range(kj, bq, bk, nq, spec)
  dk = dv = jnp.zeros(k.shape, acc)
  for g in range(G):   # the query heads sharing this kv head (static: G is small)
    def body(qi, carry, g=g):
      dk, dv = carry
      q0 = qi * bq
      q, do = q_ref[_at(q0, bq), g, :], do_ref[_at(q0, bq), g, :]
      lse = lse_ref[g, _at(q0, bq)][:, None] if softmax else None
      delta = delta_ref[g, _at(q0, bq)][:, None] if softmax else None
      q_seg = qs_ref[_at(q0, bq)][:, None] if seg else None
      p, ds = _tile_grads(spec, q, k, v, do, lse, delta, q0, kj * bk, q_seg, kv_seg, acc)
      return (dk + dot(ds.astype(q.dtype), q, acc, trans_a=True),
              dv + dot(p.astype(do.dtype), do, acc, trans_a=True))
    dk, dv = jax.lax.fori_loop(lo, hi, body, (dk, dv))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, spec: Spec, bq, bk, nk, seg):
  softmax = spec.kind == "softmax"
  (q_ref, k_ref, v_ref, do_ref), (lse_ref, delta_ref), (qs_ref, ks_ref), (dq_ref,) = split_refs(
      refs, [(4, True), (2, softmax), (2, seg), (1, True)])
  qi = pl.program_id(0)
  q, do = q_ref[...], do_ref[...]
  acc = acc_dtype(q.dtype)
  lse = lse_ref[...][:, None] if softmax else None
  delta = delta_ref[...][:, None] if softmax else None
  q_seg = qs_ref[...][:, None] if seg else None

  def body(kj, dq):
    k0 = kj * bk
    k = k_ref[_at(k0, bk), :]
    kv_seg = ks_ref[_at(k0, bk)][None, :] if seg else None
    _, ds = _tile_grads(spec, q, k, v_ref[_at(k0, bk), :], do, lse, delta, qi * bq, k0, q_seg,
                        kv_seg, acc)
    return dq + dot(ds.astype(k.dtype), k, acc)

  dq = jax.lax.fori_loop(*kv_block_range(qi, bq, bk, nk, spec), body, jnp.zeros(q.shape, acc))
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _prep(q, k, v, q_seg, kv_seg, bq, bk):
  """Pads T/S to the blocks and D to a power of two (zeros change neither q.k nor p.v)."""
  Dp = _pow2(q.shape[-1])
  qp = pad_to(pad_to(q, 3, Dp), 1, bq)
  kp, vp = (pad_to(pad_to(x, 3, Dp), 1, bk) for x in (k, v))
  segs = [] if q_seg is None else [pad_to(q_seg, 1, bq), pad_to(kv_seg, 1, bk)]
  return qp, kp, vp, segs


def fwd(spec: Spec, q, k, v, q_seg, kv_seg, *, block_q=None, block_k=None, interpret=False):
  """q [B,T,H,D], k/v [B,S,K,D] -> (o [B,T,H,D], lse [B,H,T] or None for sigmoid)."""
  B, T, H, D = q.shape
  G = H // k.shape[2]
  bq, bk = blocks(T, spec.S, block_q, block_k, FWD_BLOCK)
  qp, kp, vp, segs = _prep(q, k, v, q_seg, kv_seg, bq, bk)
  Tp, Sp, Dp = qp.shape[1], kp.shape[1], qp.shape[3]
  nq, nk = Tp // bq, Sp // bk
  q_blk = pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0))
  kv_all = pl.BlockSpec((None, Sp, None, Dp), lambda i, b, h: (b, 0, idiv(h, G), 0))
  in_specs = [q_blk, kv_all, kv_all]
  if segs:
    in_specs += [pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
                 pl.BlockSpec((None, Sp), lambda i, b, h: (b, 0))]
  softmax = spec.kind == "softmax"
  out_shape = [jax.ShapeDtypeStruct(qp.shape, q.dtype)]
  out_specs = [q_blk]
  if softmax:
    out_shape.append(jax.ShapeDtypeStruct((B, H, Tp), acc_dtype(q.dtype)))
    out_specs.append(pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)))
  outs = pl.pallas_call(
      functools.partial(_fwd_kernel, spec=spec, bq=bq, bk=bk, nk=nk, seg=bool(segs)),
      out_shape=out_shape, grid=(nq, B, H), in_specs=in_specs, out_specs=out_specs,
      compiler_params=_params(Dp), interpret=interpret,
      name=f"{spec.kind}_attention_fwd")(qp, kp, vp, *segs)
  return outs[0][:, :T, :, :D], (outs[1][:, :, :T] if softmax else None)


def bwd(spec: Spec, q, k, v, q_seg, kv_seg, o, lse, do, *, block_q=None, block_k=None,
        interpret=False):
  """FA2 backward: (dq, dk, dv) in the input layouts/dtypes. delta = rowsum(dO*O) is plain jnp."""
  B, T, H, D = q.shape
  K, G = k.shape[2], H // k.shape[2]
  bq, bk = blocks(T, spec.S, block_q, block_k, BWD_BLOCK)
  qp, kp, vp, segs = _prep(q, k, v, q_seg, kv_seg, bq, bk)
  dop = pad_to(pad_to(do, 3, qp.shape[3]), 1, bq)
  Tp, Sp, Dp = qp.shape[1], kp.shape[1], qp.shape[3]
  nq, nk = Tp // bq, Sp // bk
  acc = acc_dtype(q.dtype)
  stats = []
  if spec.kind == "softmax":
    delta = jnp.sum(do.astype(acc) * o.astype(acc), axis=-1).transpose(0, 2, 1)
    stats = [pad_to(lse, 2, bq), pad_to(delta, 2, bq)]
  seg = bool(segs)

  # dK, dV: grid (nk, B, K); a program reads all Tp rows of its G query heads.
  q_grp = pl.BlockSpec((None, Tp, G, Dp), lambda j, b, h: (b, 0, h, 0))
  kv_blk = pl.BlockSpec((None, bk, None, Dp), lambda j, b, h: (b, j, h, 0))
  in_specs = [q_grp, kv_blk, kv_blk, q_grp]
  in_specs += [pl.BlockSpec((None, G, Tp), lambda j, b, h: (b, h, 0))] * len(stats)
  if seg:
    in_specs += [pl.BlockSpec((None, Tp), lambda j, b, h: (b, 0)),
                 pl.BlockSpec((None, bk), lambda j, b, h: (b, j))]
  dk, dv = pl.pallas_call(
      functools.partial(_dkdv_kernel, spec=spec, bq=bq, bk=bk, nq=nq, G=G, seg=seg),
      out_shape=[jax.ShapeDtypeStruct(kp.shape, k.dtype)] * 2, grid=(nk, B, K),
      in_specs=in_specs, out_specs=[kv_blk, kv_blk], compiler_params=_params(Dp),
      interpret=interpret, name=f"{spec.kind}_attention_dkdv")(qp, kp, vp, dop, *stats, *segs)

  # dQ: grid (nq, B, H).
  q_blk = pl.BlockSpec((None, bq, None, Dp), lambda i, b, h: (b, i, h, 0))
  kv_all = pl.BlockSpec((None, Sp, None, Dp), lambda i, b, h: (b, 0, idiv(h, G), 0))
  in_specs = [q_blk, kv_all, kv_all, q_blk]
  in_specs += [pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))] * len(stats)
  if seg:
    in_specs += [pl.BlockSpec((None, bq), lambda i, b, h: (b, i)),
                 pl.BlockSpec((None, Sp), lambda i, b, h: (b, 0))]
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, spec=spec, bq=bq, bk=bk, nk=nk, seg=seg),
      out_shape=jax.ShapeDtypeStruct(qp.shape, q.dtype), grid=(nq, B, H), in_specs=in_specs,
      out_specs=q_blk, compiler_params=_params(Dp), interpret=interpret,
      name=f"{spec.kind}_attention_dq")(qp, kp, vp, dop, *stats, *segs)
  return dq[:, :T, :, :D], dk[:, :spec.S, :, :D], dv[:, :spec.S, :, :D]
