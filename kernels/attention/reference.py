"""Attention in plain jnp, softmax and sigmoid (`spec.kind`): the oracle and the "xla" path.

`naive`      materialises the [B,K,G,T,S] logits. It is the test oracle (float64-capable) and, because
             it is the fastest thing on CPU at short lengths, also the "xla" path for short S.
`blockwise`  FlashAttention-2 in jnp: a loop over q blocks with an online softmax over KV blocks
             forward, and a fused backward (one pass over KV blocks, each looping over q blocks,
             dQ accumulated in place). A custom_vjp keeps only (q, k, v, o, lse) between passes,
             so compiled temp memory is linear in T. Fully masked blocks (causal/window) are skipped.

GQA is done by grouping, never by repeating K/V: q [B,T,H,D] -> [B,K,G,T,D] with H = K*G, so query
head h uses kv head h // G.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels._attn_common import Spec, acc_dtype, kv_block_range, pad_to, q_block_range, visible


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


def _logits(q_BKGtD, k_BKsD, spec: Spec):
  """Returns (logits, tanh term for the softcap backward or None)."""
  s = jnp.einsum("bkgtd,bksd->bkgts", q_BKGtD, k_BKsD) * spec.scale
  if spec.softcap is None:
    return s, None
  t = jnp.tanh(s / spec.softcap)
  return spec.softcap * t, t


def naive(q_BTHD, k_BSKD, v_BSKD, spec: Spec, q_seg_BT=None, kv_seg_BS=None):
  """Materialised attention; differentiable by autodiff. Fully masked rows give 0."""
  dt = acc_dtype(q_BTHD.dtype)
  K = k_BSKD.shape[2]
  q = to_groups(q_BTHD.astype(dt), K)
  k, v = (x.astype(dt).transpose(0, 2, 1, 3) for x in (k_BSKD, v_BSKD))
  s, _ = _logits(q, k, spec)
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
              block_q=512, block_k=512):
  """FlashAttention-2 in jnp (see module doc). Pads T/S to the blocks; padded keys are masked."""
  dt = acc_dtype(q_BTHD.dtype)
  K, T, S = k_BSKD.shape[2], q_BTHD.shape[1], k_BSKD.shape[1]
  bq, bk = min(block_q, T), min(block_k, S)
  q = pad_to(to_groups(q_BTHD.astype(dt), K), 3, bq)
  k, v = (pad_to(x.astype(dt).transpose(0, 2, 1, 3), 2, bk) for x in (k_BSKD, v_BSKD))
  if q_seg_BT is not None:
    q_seg_BT, kv_seg_BS = pad_to(q_seg_BT, 1, bq), pad_to(kv_seg_BS, 1, bk)
  o = _flash(spec, bq, bk, q, k, v, q_seg_BT, kv_seg_BS)
  return from_groups(o[:, :, :, :T]).astype(q_BTHD.dtype)


def _block_mask(spec, q0, k0, bq, bk, q_seg, kv_seg):
  """Mask of the (q0.., k0..) tile, broadcastable to [B,K,G,bq,bk]."""
  qs = ks = None
  if q_seg is not None:
    qs = _seg_q(jax.lax.dynamic_slice_in_dim(q_seg, q0, bq, axis=1))
    ks = _seg_k(jax.lax.dynamic_slice_in_dim(kv_seg, k0, bk, axis=1))
  q_pos = q0 + jnp.arange(bq, dtype=jnp.int32)[:, None]
  k_pos = k0 + jnp.arange(bk, dtype=jnp.int32)[None, :]
  return visible(q_pos, k_pos, spec, qs, ks)


def _fwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg):
  """Returns o [B,K,G,Tp,D] and lse [B,K,G,Tp] (lse unused for sigmoid)."""
  B, K, G, Tp, D = q.shape
  nk = k.shape[2] // bk
  sl = jax.lax.dynamic_slice_in_dim

  def one_q_block(qi):
    q0 = qi * bq
    q_blk = sl(q, q0, bq, axis=3)
    lo, hi = kv_block_range(qi, bq, bk, nk, spec)

    def body(kj, carry):
      m, l, acc = carry
      k0 = kj * bk
      k_blk, v_blk = sl(k, k0, bk, axis=2), sl(v, k0, bk, axis=2)
      s, _ = _logits(q_blk, k_blk, spec)
      mask = _block_mask(spec, q0, k0, bq, bk, q_seg, kv_seg)
      if spec.kind == "sigmoid":
        p = jnp.where(mask, jax.nn.sigmoid(s + spec.bias), 0.0)
        return m, l, acc + jnp.einsum("bkgts,bksd->bkgtd", p, v_blk)
      s = jnp.where(mask, s, -jnp.inf)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)   # rows with nothing visible yet
      alpha = jnp.exp(m - m_safe)
      p = jnp.exp(s - m_safe[..., None])
      l = alpha * l + jnp.sum(p, axis=-1)
      acc = alpha[..., None] * acc + jnp.einsum("bkgts,bksd->bkgtd", p, v_blk)
      return m_new, l, acc

    init = (jnp.full((B, K, G, bq), -jnp.inf, q.dtype), jnp.zeros((B, K, G, bq), q.dtype),
            jnp.zeros((B, K, G, bq, D), q.dtype))
    m, l, acc = jax.lax.fori_loop(lo, hi, body, init)
    if spec.kind == "sigmoid":
      return acc, l
    empty = l == 0
    o = acc / jnp.where(empty, 1.0, l)[..., None]
    lse = jnp.where(empty, 0.0, m + jnp.log(jnp.where(empty, 1.0, l)))
    return o, lse

  o, lse = jax.lax.map(one_q_block, jnp.arange(Tp // bq, dtype=jnp.int32))
  # [nq,B,K,G,bq,...] -> [B,K,G,Tp,...]
  o = jnp.moveaxis(o, 0, 3).reshape(B, K, G, Tp, D)
  lse = jnp.moveaxis(lse, 0, 3).reshape(B, K, G, Tp)
  return o, lse


def _bwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg, lse, delta, do):
  """Fused FA2 backward: scan over KV blocks (dK, dV per block), inner loop over q blocks that
  see it, dQ accumulated in place in the carry."""
  B, K, G, Tp, D = q.shape
  nq = Tp // bq
  sl = jax.lax.dynamic_slice_in_dim

  def one_kv_block(dq, kj):
    k0 = kj * bk
    k_blk, v_blk = sl(k, k0, bk, axis=2), sl(v, k0, bk, axis=2)
    lo, hi = q_block_range(kj, bq, bk, nq, spec)

    def body(qi, carry):
      dq, dk, dv = carry
      q0 = qi * bq
      q_blk, do_blk = sl(q, q0, bq, axis=3), sl(do, q0, bq, axis=3)
      s, t = _logits(q_blk, k_blk, spec)
      mask = _block_mask(spec, q0, k0, bq, bk, q_seg, kv_seg)
      dp = jnp.einsum("bkgtd,bksd->bkgts", do_blk, v_blk)
      if spec.kind == "sigmoid":
        p = jnp.where(mask, jax.nn.sigmoid(s + spec.bias), 0.0)
        ds = p * (1.0 - p) * dp
      else:
        p = jnp.where(mask, jnp.exp(s - sl(lse, q0, bq, axis=3)[..., None]), 0.0)
        ds = p * (dp - sl(delta, q0, bq, axis=3)[..., None])
        if t is not None:
          ds = ds * (1.0 - t * t)
      ds = ds * spec.scale
      dv = dv + jnp.einsum("bkgts,bkgtd->bksd", p, do_blk)
      dk = dk + jnp.einsum("bkgts,bkgtd->bksd", ds, q_blk)
      dq_blk = sl(dq, q0, bq, axis=3) + jnp.einsum("bkgts,bksd->bkgtd", ds, k_blk)
      return jax.lax.dynamic_update_slice_in_dim(dq, dq_blk, q0, axis=3), dk, dv

    zeros = jnp.zeros((B, K, bk, D), q.dtype)
    dq, dk, dv = jax.lax.fori_loop(lo, hi, body, (dq, zeros, zeros))
    return dq, (dk, dv)

  nk = k.shape[2] // bk
  dq, (dk, dv) = jax.lax.scan(one_kv_block, jnp.zeros_like(q), jnp.arange(nk, dtype=jnp.int32))
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
  delta = jnp.sum(do * o, axis=-1)   # FA2's rowsum(dO * O); unused by sigmoid
  dq, dk, dv = _bwd_pass(spec, bq, bk, q, k, v, q_seg, kv_seg, lse, delta, do)
  return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
