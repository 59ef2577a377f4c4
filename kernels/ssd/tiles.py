"""One SSD chunk on 2-D tiles: the math shared by the TPU and the Triton kernel bodies.

A chunk is L tokens of one (batch, head). Inputs are tiles already in VMEM / registers:
  x_LP, B_LN, C_LN   token tiles (input dtype; matmul operands, f32 accumulation)
  dt_L1 / dt_1L      dt as a column and as a row
  a_L1 / a_1L        a = cumsum(dt * A) from the chunk start, as a column and as a row
  h_PN               the state entering the chunk (accumulation dtype)
The kernels receive both orientations of the per-token scalars because turning a row into a
column is a transpose Mosaic would have to relayout; the wrappers build both outside. The
cumsum is also done outside (TPU Pallas cannot lower cumsum).

Only ops that lower for both Mosaic TPU and Triton are used: 2-D dot_general, exp, where,
broadcasted_iota, and reductions with keepdims (no slicing of values: Triton has none).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _dot(a, b, ca: int, cb: int, acc):
  """a·b contracting dim `ca` of a with dim `cb` of b; accumulates in `acc`."""
  return lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), preferred_element_type=acc)


def _last(v_1L):
  """v[L-1] as a [1, 1] tile, without a slice (Triton cannot slice values)."""
  idx = lax.broadcasted_iota(jnp.int32, v_1L.shape, 1)
  return jnp.sum(jnp.where(idx == v_1L.shape[1] - 1, v_1L, 0.0), axis=1, keepdims=True)


def _mixing(C_LN, B_LN, dt_1L, a_L1, a_1L, acc):
  """cb = C Bᵀ, decay[i, j] = exp(a_i - a_j) for i >= j else 0, and w = cb ∘ decay ∘ dt_j."""
  L = C_LN.shape[0]
  rows = lax.broadcasted_iota(jnp.int32, (L, L), 0)
  cols = lax.broadcasted_iota(jnp.int32, (L, L), 1)
  # Mask before exp: above the diagonal a_i - a_j > 0 and could overflow.
  decay_LL = jnp.exp(jnp.where(rows >= cols, a_L1 - a_1L, -jnp.inf))
  cb_LL = _dot(C_LN, B_LN, 1, 1, acc)
  return cb_LL, decay_LL, cb_LL * decay_LL * dt_1L


def chunk_fwd(x_LP, B_LN, C_LN, dt_L1, dt_1L, a_L1, a_1L, h_PN):
  """Returns (y_LP, h_next_PN) for one chunk, both in h's dtype."""
  acc, mm = h_PN.dtype, x_LP.dtype
  _, _, w_LL = _mixing(C_LN, B_LN, dt_1L, a_L1, a_1L, acc)
  y_LP = (_dot(w_LL.astype(mm), x_LP, 1, 0, acc)
          + jnp.exp(a_L1) * _dot(C_LN, h_PN.astype(mm), 1, 1, acc))
  a_end_11 = _last(a_1L)
  # Weight of token j in the state at the chunk end: exp(a_end - a_j) * dt_j.
  w_end_L1 = jnp.exp(a_end_11 - a_L1) * dt_L1
  h_next_PN = (jnp.exp(a_end_11) * h_PN
               + _dot((x_LP * w_end_L1).astype(mm), B_LN, 0, 0, acc))
  return y_LP, h_next_PN


def chunk_bwd(x_LP, B_LN, C_LN, dt_L1, dt_1L, a_L1, a_1L, h_PN, dy_LP, dh_PN):
  """Backward of `chunk_fwd` given dy and dh (the gradient w.r.t. h_next).

  Returns (dx_LP, dB_LN, dC_LN, ddt_L1, ddt_1L, da_L1, da_1L, dh_prev_PN). The gradients
  of the per-token scalars come in a column part and a row part (their sum is the gradient),
  again to avoid transposes; `da` is w.r.t. the in-chunk cumsum a, which the wrapper turns
  into gradients for dt and A with a reverse cumsum.
  """
  acc, mm = h_PN.dtype, x_LP.dtype
  cb_LL, decay_LL, w_LL = _mixing(C_LN, B_LN, dt_1L, a_L1, a_1L, acc)
  a_end_11 = _last(a_1L)
  w_end_L1 = jnp.exp(a_end_11 - a_L1) * dt_L1
  ea_L1 = jnp.exp(a_L1)
  dy_LP = dy_LP.astype(acc)
  dy_mm, dh_mm, h_mm = dy_LP.astype(mm), dh_PN.astype(mm), h_PN.astype(mm)

  # y = w x + exp(a) ∘ (C hᵀ)
  dw_LL = _dot(dy_mm, x_LP, 1, 1, acc)                      # dy xᵀ
  y_off_LP = ea_L1 * _dot(C_LN, h_mm, 1, 1, acc)
  dcb_LL = dw_LL * decay_LL * dt_1L
  dx_LP = _dot(w_LL.astype(mm), dy_mm, 0, 0, acc)           # wᵀ dy
  dC_LN = _dot(dcb_LL.astype(mm), B_LN, 1, 0, acc) + ea_L1 * _dot(dy_mm, h_mm, 1, 0, acc)
  dB_LN = _dot(dcb_LL.astype(mm), C_LN, 0, 0, acc)          # dcbᵀ C
  g_LL = dw_LL * w_LL                                       # d/d(a_i - a_j) of every term
  da_L1 = jnp.sum(g_LL, axis=1, keepdims=True) + jnp.sum(dy_LP * y_off_LP, axis=1, keepdims=True)
  da_1L = -jnp.sum(g_LL, axis=0, keepdims=True)
  ddt_1L = jnp.sum(dw_LL * cb_LL * decay_LL, axis=0, keepdims=True)

  # h_next = exp(a_end) h + (x ∘ w_end)ᵀ B
  xdh_LN = _dot(x_LP, dh_mm, 1, 0, acc)                     # x dh
  dx_LP += w_end_L1 * _dot(B_LN, dh_mm, 1, 1, acc)          # B dhᵀ
  dB_LN += w_end_L1 * xdh_LN
  dw_end_L1 = jnp.sum(xdh_LN * B_LN, axis=1, keepdims=True)
  ddt_L1 = jnp.exp(a_end_11 - a_L1) * dw_end_L1
  t_L1 = w_end_L1 * dw_end_L1
  da_end_11 = (jnp.sum(t_L1, axis=0, keepdims=True)
               + jnp.exp(a_end_11) * jnp.sum(jnp.sum(h_PN * dh_PN, axis=1, keepdims=True),
                                             axis=0, keepdims=True))
  last_1L = lax.broadcasted_iota(jnp.int32, a_1L.shape, 1) == a_1L.shape[1] - 1
  da_1L += jnp.where(last_1L, da_end_11, 0.0)
  da_L1 -= t_L1
  dh_prev_PN = (jnp.exp(a_end_11) * dh_PN
                + _dot((dy_LP * ea_L1).astype(mm), C_LN, 0, 0, acc))   # (dy ∘ e^a)ᵀ C
  return dx_LP, dB_LN, dC_LN, ddt_L1, ddt_1L, da_L1, da_1L, dh_prev_PN
