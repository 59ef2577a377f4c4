"""Attention in plain jnp, softmax and sigmoid (`spec.kind`): the oracle and the "xla" path.

`naive`      materialises the [B,K,G,T,S] logits: the test oracle (float64-capable).
`blockwise`  FlashAttention-2 in jnp: a loop over q blocks with an online softmax over KV blocks
             forward, and a fused backward (one pass over KV blocks, each looping over q blocks,
             dQ accumulated in place). A custom_vjp keeps only (q, k, v, o, lse) between passes,
             so compiled temp memory is linear in T. Blocks masked by causal/window are skipped.

GQA is done by grouping, never by repeating K/V: q [B,T,H,D] -> [B,K,G,T,D] with H = K*G, so query
head h uses kv head h // G.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels._attn_common import (MASK_VALUE, Spec, acc_dtype, finish_softmax, kv_block_range,
                                   online_softmax, pad_to, q_block_range, tile_dlogits, tile_logits,
                                   tile_mask, tile_probs, visible)


def to_groups(x_BTHD, K):
  B, T, H, D = x_BTHD.shape
  return x_BTHD.reshape(B, T, K, H // K, D).transpose(0, 2, 3, 1, 4)


def from_groups(x_BKGTD):
  B, K, G, T, D = x_BKGTD.shape
  return x_BKGTD.transpose(0, 3, 1, 2, 4).reshape(B, T, K * G, D)


def _seg_q(seg_BT):   # -> broadcastable against [B,K,G,T,S]
  return None if seg_BT is None else seg_BT[:, None, None, :, None]


def _seg_k(seg_BS):
  return None if seg_BS is None else seg_BS[:, None, None, None, :]


def naive(q_BTHD, k_BSKD, v_BSKD, spec: Spec, q_seg_BT=None, kv_seg_BS=None):
  """Materialised attention, differentiable by autodiff, written independently of the tile math
  below (it only shares the mask rule `visible`). Fully masked rows give 0."""
  dt = acc_dtype(q_BTHD.dtype)
  K = k_BSKD.shape[2]
  q = to_groups(q_BTHD.astype(dt), K)
  k, v = (x.astype(dt).transpose(0, 2, 1, 3) for x in (k_BSKD, v_BSKD))
  s = jnp.einsum("bkgtd,bksd->bkgts", q, k) * spec.scale
  if spec.softcap is not None:
    s = spec.softcap * jnp.tanh(s / spec.softcap)
  T, S = s.shape[-2:]
  mask = visible(jnp.arange(T)[:, None], jnp.arange(S)[None, :], spec,
                 _seg_q(q_seg_BT), _seg_k(kv_seg_BS))
  if spec.kind == "sigmoid":
    p = jnp.where(mask, jax.nn.sigmoid(s + spec.bias), 0.0)
  else:
    s = jnp.where(mask, s, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))   # exp(-inf) = 0 on masked entries
    denom = jnp.sum(e, axis=-1, keepdims=True)
    p = e / jnp.where(denom == 0, 1.0, denom)
  o = jnp.einsum("bkgts,bksd->bkgtd", p, v)
  return from_groups(o).astype(q_BTHD.dtype)


def blockwise(q_BTHD, k_BSKD, v_BSKD, spec: Spec, q_seg_BT=None, kv_seg_BS=None, *,
              block_q=256, block_k=256):
  """FlashAttention-2 in jnp (see module doc). Pads T/S to the blocks; padded keys are masked.

  As in the kernels, the dots take their operands in the inputs' dtype (bfloat16 inputs: bfloat16
  q, k, v, probabilities and gradients) and accumulate in float32, as do the softmax statistics."""
  io = jnp.promote_types(q_BTHD.dtype, jnp.promote_types(k_BSKD.dtype, v_BSKD.dtype))
  K, T, S = k_BSKD.shape[2], q_BTHD.shape[1], k_BSKD.shape[1]
  bq, bk = min(block_q, T), min(block_k, S)
  q = pad_to(to_groups(q_BTHD.astype(io), K), 3, bq)
  k, v = (pad_to(x.astype(io).transpose(0, 2, 1, 3), 2, bk) for x in (k_BSKD, v_BSKD))
  if q_seg_BT is not None:
    q_seg_BT, kv_seg_BS = pad_to(q_seg_BT, 1, bq), pad_to(kv_seg_BS, 1, bk)
  o = _flash(spec, bq, bk, q, k, v, q_seg_BT, kv_seg_BS)
  return from_groups(o[:, :, :, :T]).astype(q_BTHD.dtype)


def _dot(subscripts, a, b):
  """einsum of operands cast to b's dtype, accumulated in (at least) float32."""
  return jnp.einsum(subscripts, a.astype(b.dtype), b, preferred_element_type=acc_dtype(b.dtype))


def _seg_tile(q_seg, kv_seg, q0, k0, bq, bk):
  """Segment ids of a tile as [B,1,1,bq,1] and [B,1,1,1,bk] (or None, None)."""
  if q_seg is None:
    return None, None
  sl = jax.lax.dynamic_slice_in_dim
  return _seg_q(sl(q_seg, q0, bq, axis=1)), _seg_k(sl(kv_seg, k0, bk, axis=1))


def _fwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg):
  """Returns o [B,K,G,Tp,D] and lse [B,K,G,Tp,1] (lse unused for sigmoid)."""
  B, K, G, Tp, D = q.shape
  nk = k.shape[2] // bk
  sl = jax.lax.dynamic_slice_in_dim
  dt = acc_dtype(q.dtype)

  def one_q_block(qi):
    q0 = qi * bq
    q_blk = sl(q, q0, bq, axis=3)
    lo, hi = kv_block_range(qi, bq, bk, nk, spec)

    def body(kj, carry):
      m, l, acc = carry
      k0 = kj * bk
      k_blk, v_blk = sl(k, k0, bk, axis=2), sl(v, k0, bk, axis=2)
      s, _ = tile_logits(spec, _dot("bkgtd,bksd->bkgts", q_blk, k_blk))
      mask = tile_mask(spec, q0, k0, bq, bk, *_seg_tile(q_seg, kv_seg, q0, k0, bq, bk))
      if spec.kind == "sigmoid":
        p, alpha = tile_probs(spec, s, mask, None), 1.0
      else:
        p, alpha, m, l = online_softmax(spec, s, mask, m, l)
      return m, l, alpha * acc + _dot("bkgts,bksd->bkgtd", p, v_blk)

    init = (jnp.full((B, K, G, bq, 1), MASK_VALUE, dt), jnp.zeros((B, K, G, bq, 1), dt),
            jnp.zeros((B, K, G, bq, D), dt))
    m, l, acc = jax.lax.fori_loop(lo, hi, body, init)
    return (acc, l) if spec.kind == "sigmoid" else finish_softmax(m, l, acc)

  o, lse = jax.lax.map(one_q_block, jnp.arange(Tp // bq, dtype=jnp.int32))
  # [nq,B,K,G,bq,X] -> [B,K,G,Tp,X]
  unblock = lambda x: jnp.moveaxis(x, 0, 3).reshape(B, K, G, Tp, x.shape[-1])
  return unblock(o), unblock(lse)


def _bwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg, lse, delta, do):
  """Fused FA2 backward: scan over KV blocks (dK, dV per block), inner loop over the q blocks that
  see it, dQ accumulated in place in the carry."""
  B, K, G, Tp, D = q.shape
  nq = Tp // bq
  sl = jax.lax.dynamic_slice_in_dim
  dt = acc_dtype(q.dtype)

  def one_kv_block(dq, kj):
    k0 = kj * bk
    k_blk, v_blk = sl(k, k0, bk, axis=2), sl(v, k0, bk, axis=2)
    lo, hi = q_block_range(kj, bq, bk, nq, spec)

    def body(qi, carry):
      dq, dk, dv = carry
      q0 = qi * bq
      q_blk, do_blk = sl(q, q0, bq, axis=3), sl(do, q0, bq, axis=3)
      s, t = tile_logits(spec, _dot("bkgtd,bksd->bkgts", q_blk, k_blk))
      mask = tile_mask(spec, q0, k0, bq, bk, *_seg_tile(q_seg, kv_seg, q0, k0, bq, bk))
      p = tile_probs(spec, s, mask, sl(lse, q0, bq, axis=3))
      dp = _dot("bkgtd,bksd->bkgts", do_blk, v_blk)
      ds = tile_dlogits(spec, p, t, dp, sl(delta, q0, bq, axis=3))
      dv = dv + _dot("bkgts,bkgtd->bksd", p, do_blk.astype(q.dtype))
      dk = dk + _dot("bkgts,bkgtd->bksd", ds, q_blk)
      dq_blk = sl(dq, q0, bq, axis=3) + _dot("bkgts,bksd->bkgtd", ds, k_blk)
      return jax.lax.dynamic_update_slice_in_dim(dq, dq_blk, q0, axis=3), dk, dv

    zeros = jnp.zeros((B, K, bk, D), dt)
    dq, dk, dv = jax.lax.fori_loop(lo, hi, body, (dq, zeros, zeros))
    return dq, (dk, dv)

  nk = k.shape[2] // bk
  dq, (dk, dv) = jax.lax.scan(one_kv_block, jnp.zeros(q.shape, dt), jnp.arange(nk, dtype=jnp.int32))
  dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)   # [nk,B,K,bk,D] -> [B,K,Sp,D]
  dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _flash(spec, bq, bk, q, k, v, q_seg, kv_seg):
  return _fwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg)[0]


def _flash_fwd(spec, bq, bk, q, k, v, q_seg, kv_seg):
  o, lse = _fwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg)
  return o, (q, k, v, q_seg, kv_seg, o, lse)


def _flash_bwd(spec, bq, bk, res, do):
  q, k, v, q_seg, kv_seg, o, lse = res
  delta = jnp.sum(do * o, axis=-1, keepdims=True)   # FA2's rowsum(dO * O); unused by sigmoid
  dq, dk, dv = _bwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg, lse, delta, do)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
