"""What softmax and sigmoid attention share: input checks, THE mask rule, block ranges.

The mask rule lives only here (`visible`); the materialised oracle, the blockwise jnp path and the
Pallas kernel bodies all call it, so they cannot disagree. With T queries, S keys and
offset = S - T (causal attention aligned bottom-right, as when T new queries follow S - T cached
keys), query i sees key j iff

  i < T and j < S                            (rows/keys padded up to a block multiple: never)
  and (not causal or j <= i + offset)
  and (window is None or j > i + offset - window)   (W keys, itself included)
  and (no segments or q_seg[i] == kv_seg[j])        (packed sequences)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Spec(NamedTuple):
  """Static description of one attention call (hashable: used as a custom_vjp nondiff arg)."""
  kind: str              # "softmax" | "sigmoid"
  causal: bool
  window: int | None
  scale: float           # includes a static logit_scale
  softcap: float | None  # softmax only
  bias: float            # sigmoid only (0.0 for softmax)
  T: int                 # true query length (before padding)
  S: int                 # true key length


def check_inputs(name, q_BTHD, k_BSKD, v_BSKD, *, causal, segment_ids, window, scale):
  """Validates shapes/options; returns (q_seg_BT | None, kv_seg_BS | None, scale)."""
  for arg, x in (("q", q_BTHD), ("k", k_BSKD), ("v", v_BSKD)):
    if x.ndim != 4:
      raise ValueError(f"{name}: {arg} must be [batch, time, heads, head_dim], got shape {x.shape}")
  B, T, H, D = q_BTHD.shape
  if k_BSKD.shape != v_BSKD.shape:
    raise ValueError(f"{name}: k shape {k_BSKD.shape} != v shape {v_BSKD.shape}")
  Bk, S, K, Dk = k_BSKD.shape
  if Bk != B or Dk != D:
    raise ValueError(f"{name}: q shape {q_BTHD.shape} and k shape {k_BSKD.shape} disagree on "
                     "batch or head_dim")
  if K == 0 or H % K:
    raise ValueError(f"{name}: kv heads K={K} must divide query heads H={H} (GQA/MQA)")
  if min(T, S, D) == 0:
    raise ValueError(f"{name}: empty input (T={T}, S={S}, D={D})")
  if not isinstance(causal, bool):
    raise ValueError(f"{name}: causal must be a bool, got {causal!r}")
  if window is not None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
      raise ValueError(f"{name}: window must be a positive int, got {window!r}")
    if not causal:
      raise ValueError(f"{name}: window={window} requires causal=True (it bounds the causal range "
                       "from below)")
  if scale is None:
    scale = D ** -0.5
  if not isinstance(scale, (int, float)) or not math.isfinite(scale):
    raise ValueError(f"{name}: scale must be a finite Python number (static), got {scale!r}")
  q_seg = kv_seg = None
  if segment_ids is not None:
    if isinstance(segment_ids, (tuple, list)):
      if len(segment_ids) != 2:
        raise ValueError(f"{name}: segment_ids pair must be (q_seg_BT, kv_seg_BS), got "
                         f"{len(segment_ids)} items")
      q_seg, kv_seg = segment_ids
    else:
      if T != S:
        raise ValueError(f"{name}: a single segment_ids array needs T == S (got T={T}, S={S}); "
                         "pass a pair (q_seg_BT, kv_seg_BS)")
      q_seg = kv_seg = segment_ids
    q_seg, kv_seg = jnp.asarray(q_seg), jnp.asarray(kv_seg)
    if q_seg.shape != (B, T) or kv_seg.shape != (B, S):
      raise ValueError(f"{name}: segment ids shapes {q_seg.shape}, {kv_seg.shape} must be "
                       f"({B}, {T}) and ({B}, {S})")
    if not all(jnp.issubdtype(s.dtype, jnp.integer) for s in (q_seg, kv_seg)):
      raise ValueError(f"{name}: segment ids must be integers, got {q_seg.dtype}, {kv_seg.dtype}")
    q_seg, kv_seg = q_seg.astype(jnp.int32), kv_seg.astype(jnp.int32)
  return q_seg, kv_seg, float(scale)


def acc_dtype(dtype):
  """f32 accumulation, but float64 stays float64 (so check_grads works in x64)."""
  return jnp.promote_types(dtype, jnp.float32)


def visible(q_pos, k_pos, spec: Spec, q_seg=None, kv_seg=None):
  """The mask rule. Positions/ids broadcast against each other (e.g. [bq,1] vs [1,bk])."""
  offset = spec.S - spec.T
  ok = (k_pos < spec.S) & (q_pos < spec.T)   # padded query rows see nothing (their lse is junk)
  if spec.causal:
    ok = ok & (k_pos <= q_pos + offset)
  if spec.window is not None:
    ok = ok & (k_pos > q_pos + offset - spec.window)
  if q_seg is not None:
    ok = ok & (q_seg == kv_seg)
  return ok


# Block ranges: which KV blocks a q block can see (and vice versa), so fully masked blocks are
# skipped. Block indices may be Python ints or traced int32 scalars (inside Pallas index maps too).
def idiv(x, d):
  """x // d for x >= 0, d > 0. lax.div, not jnp's floor_divide: the latter emits `sign`, whose
  Mosaic lowering queries the TPU generation and so fails when lowering for TPU off-TPU."""
  if isinstance(x, int):
    return x // d
  return jax.lax.div(x, jnp.int32(d))


def _floor_div(x, d, spec: Spec):
  """floor(x / d) for block-range numerators, which are >= -(T + S + window)."""
  shift = -(-(spec.T + spec.S + (spec.window or 0)) // d) + 1
  return idiv(x + shift * d, d) - shift


def _clip(x, lo, hi):
  return jnp.minimum(jnp.maximum(x, lo), hi)


def kv_block_range(qi, bq, bk, nk, spec: Spec):
  """[lo, hi) of KV block indices with any key visible from q block qi."""
  offset = spec.S - spec.T
  lo, hi = 0, nk
  if spec.causal:   # last key seen by the last row of the block
    hi = _clip(_floor_div(qi * bq + bq - 1 + offset, bk, spec) + 1, 0, nk)
  if spec.window is not None:   # first key seen by the first row
    lo = _clip(_floor_div(qi * bq + offset - spec.window + 1, bk, spec), 0, nk)
  return lo, hi


def q_block_range(kj, bq, bk, nq, spec: Spec):
  """[lo, hi) of q block indices with any query that sees a key of KV block kj."""
  offset = spec.S - spec.T
  lo, hi = 0, nq
  if spec.causal:   # first query that sees the first key of the block
    lo = _clip(_floor_div(kj * bk - offset, bq, spec), 0, nq)
  if spec.window is not None:   # last query that sees the last key of the block
    hi = _clip(_floor_div(kj * bk + bk - 1 - offset + spec.window - 1, bq, spec) + 1, 0, nq)
  return lo, hi


# ---- Tile math shared by the blockwise jnp path and the Pallas TPU/Triton kernel bodies. -------
# Tiles are [..., bq, bk]; per-row statistics (running max m, denominator l, lse, delta) are kept
# with a trailing unit axis, [..., bq, 1], so they broadcast against a tile in every backend.
# Masked logits become a large *finite* negative value: max/exp never see inf - inf, and masked
# probabilities are zeroed with `where`, so a row that sees no key yields l = 0 and o = 0.
MASK_VALUE = -1e30


def dot(a, b, acc, *, trans_a=False, trans_b=False):
  """2-D matmul [m,k]@[k,n] accumulating in `acc` (trans_* as in the bundled TPU kernels)."""
  if trans_a:
    a = a.T
  dims = (((1,), (1 if trans_b else 0,)), ((), ()))
  return jax.lax.dot_general(a, b, dims, preferred_element_type=acc)


def tile_mask(spec: Spec, q0, k0, bq, bk, q_seg_col=None, kv_seg_row=None):
  """[bq, bk] visibility of the tile starting at (q0, k0); seg ids as [bq,1] and [1,bk]."""
  q_pos = q0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
  k_pos = k0 + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
  return visible(q_pos, k_pos, spec, q_seg_col, kv_seg_row)


def tile_logits(spec: Spec, qk):
  """Raw q.k -> (logits, t) where t = tanh term kept for the softcap backward (or None)."""
  s = qk * spec.scale
  if spec.softcap is None:
    return s, None
  t = jnp.tanh(s * (1.0 / spec.softcap))
  return spec.softcap * t, t


def tile_probs(spec: Spec, s, mask, row):
  """Softmax numerators exp(s - row) (row = running max or lse), or sigmoid(s + b); 0 if masked."""
  if spec.kind == "sigmoid":
    return jnp.where(mask, jax.nn.sigmoid(s + spec.bias), 0.0)
  return jnp.where(mask, jnp.exp(s - row), 0.0)


def online_softmax(spec: Spec, s, mask, m_prev, l_prev):
  """One KV tile of the online softmax -> (p, alpha, m_next, l_next); acc' = alpha acc + p v."""
  m_tile = jnp.max(jnp.where(mask, s, MASK_VALUE), axis=-1, keepdims=True)
  m_next = jnp.maximum(m_prev, m_tile)
  p = tile_probs(spec, s, mask, m_next)
  alpha = jnp.exp(m_prev - m_next)
  return p, alpha, m_next, alpha * l_prev + jnp.sum(p, axis=-1, keepdims=True)


def finish_softmax(m, l, acc):
  """(o, lse) from the final running stats; rows that saw nothing give o = 0 (finite lse)."""
  l_safe = jnp.where(l == 0, 1.0, l)
  return acc / l_safe, m + jnp.log(l_safe)


def tile_dlogits(spec: Spec, p, t, dp, delta):
  """dL/d(q.k) for a tile (the logit scale included): softmax dS = P (dP - delta), times the
  softcap derivative 1 - t^2; sigmoid dS = P (1 - P) dP."""
  if spec.kind == "sigmoid":
    ds = p * (1.0 - p) * dp
  else:
    ds = p * (dp - delta)
    if t is not None:
      ds = ds * (1.0 - t * t)
  return ds * spec.scale


def split_refs(refs, groups):
  """Splits a kernel's flat ref list into groups given as (size, present); an absent group (e.g.
  no segment ids, no lse for sigmoid) yields Nones."""
  out, i = [], 0
  for n, present in groups:
    out.append(tuple(refs[i:i + n]) if present else (None,) * n)
    i += n if present else 0
  return out


def pad_to(x, axis, multiple, value=0):
  """Pads `axis` of x up to a multiple of `multiple`."""
  n = x.shape[axis]
  extra = -n % multiple
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


def is_static_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def maybe_traced_scalar(name, what, x):
  """A Python number stays static; a 0-d array is allowed (traced)."""
  if is_static_number(x):
    return x
  x = jnp.asarray(x)
  if x.ndim != 0:
    raise ValueError(f"{name}: {what} must be a scalar, got shape {x.shape}")
  return x

