"""Mamba-2 SSD (state-space duality) in plain jnp: the oracle and the chunked "xla" path.

Per (batch, head) the state h is P×N and the decay is one scalar per step:
    h_t = exp(dt_t * A) h_{t-1} + dt_t x_t B_tᵀ        y_t = h_t C_t
Head h reads B/C group h // (H // G).

`ssd_naive` runs that recurrence token by token (lax.scan): the oracle, float64-capable.
`ssd_chunked` is the SSD algorithm (arXiv:2405.21060 §6): inside a chunk of L tokens the
output is a masked quadratic form (C Bᵀ ∘ decay) X, which is matmul work; only the P×N
state crosses chunk boundaries, so the sequential part is T/L steps instead of T. On CPU
this makes forward+backward 8-12× faster than the token scan (whose
reverse pass walks T tiny steps and stores T states), see benchmarks/bench_ssm.py.

`ssd_chunked`'s backward is written by hand (a custom_vjp, reverse mode only), from the same
chunks: it saves y and the state entering each chunk, and no [L, L] tensor is summed (the
log-decay gradient comes from per-token dot products, `_ssd_bwd`). With the matmuls laid out
for XLA:CPU's GEMMs it runs fwd+bwd about 2× faster than autodiff of the same forward and than
the minimal SSD in torch (benchmarks/bench_ssd_vs_mamba.py, docs/kernels_ssm.md).

Both accumulate in promote_types(dtype, float32) and return (y in x.dtype, final state in
the accumulation dtype).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def acc_dtype(*arrays) -> jnp.dtype:
  """Accumulation dtype: float32, or float64 when an input already is."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def ssd_naive(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, initial_state_BHPN=None):
  """Token-by-token recurrence. Returns (y_BTHP, final_state_BHPN)."""
  Bsz, _, H, P = x_BTHP.shape
  G, N = B_BTGN.shape[2:]
  acc = acc_dtype(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN)
  # Every head gets its own copy of its group's B/C: fine for an oracle.
  B_BTHN = jnp.repeat(B_BTGN, H // G, axis=2).astype(acc)
  C_BTHN = jnp.repeat(C_BTGN, H // G, axis=2).astype(acc)
  h_BHPN = (jnp.zeros((Bsz, H, P, N), acc) if initial_state_BHPN is None
            else initial_state_BHPN.astype(acc))

  def step(h_BHPN, inputs):
    x_BHP, dt_BH, B_BHN, C_BHN = inputs
    decay_BH = jnp.exp(dt_BH * A_H.astype(acc))
    h_BHPN = (decay_BH[..., None, None] * h_BHPN
              + (dt_BH[..., None] * x_BHP)[..., :, None] * B_BHN[..., None, :])
    y_BHP = jnp.einsum("bhpn,bhn->bhp", h_BHPN, C_BHN)
    return h_BHPN, y_BHP

  time_major = lambda a: jnp.moveaxis(a.astype(acc), 1, 0)
  h_BHPN, y_TBHP = jax.lax.scan(
      step, h_BHPN, (time_major(x_BTHP), time_major(dt_BTH), time_major(B_BTHN),
                     time_major(C_BTHN)))
  return jnp.moveaxis(y_TBHP, 0, 1).astype(x_BTHP.dtype), h_BHPN


def pad_time(T: int, chunk: int, *arrays):
  """Pads axis 1 (time) up to a multiple of `chunk` with zeros.

  Zero padding is exact for the recurrence: a padded step has dt = 0, so its decay is
  exp(0) = 1 and its input dt·x·Bᵀ is 0 -- the state passes through unchanged, and the
  padded outputs are sliced off by the caller.
  """
  pad = -T % chunk
  return [jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)) for a in arrays]


def ssd_chunked(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, initial_state_BHPN=None,
                chunk_size: int = 64):
  """Chunked SSD in jnp with a hand-written backward. Returns (y_BTHP, final_state_BHPN)."""
  if initial_state_BHPN is None:
    Bsz, _, H, P = x_BTHP.shape
    initial_state_BHPN = jnp.zeros((Bsz, H, P, B_BTGN.shape[-1]),
                                   acc_dtype(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN))
  return _ssd(chunk_size, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, initial_state_BHPN)


_HIGHEST = jax.lax.Precision.HIGHEST


def _chunks(L, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN):
  """Accumulation dtype, T padded to nc·L and split into (chunk c, position l), heads into
  (group g, head-in-group r); a = in-chunk cumsum of dt·A (always <= 0), as a product with a
  triangle of ones (XLA:CPU's cumsum is a slow reduce-window; HIGHEST keeps it exact on TPU)."""
  Bsz, T, H, P = x_BTHP.shape
  G, N = B_BTGN.shape[2:]
  R = H // G
  acc = acc_dtype(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN)
  x, dt, Bm, Cm = pad_time(T, L, *(a.astype(acc) for a in (x_BTHP, dt_BTH, B_BTGN, C_BTGN)))
  nc = x.shape[1] // L
  x_BCLGRP = x.reshape(Bsz, nc, L, G, R, P)
  dt_BCGRL = jnp.moveaxis(dt.reshape(Bsz, nc, L, G, R), 2, -1)
  a_BCGRL = jnp.matmul(dt_BCGRL * A_H.astype(acc).reshape(G, R, 1),
                       jnp.triu(jnp.ones((L, L), acc)), precision=_HIGHEST)
  return (x_BCLGRP, dt_BCGRL, a_BCGRL, Bm.reshape(Bsz, nc, L, G, N),
          Cm.reshape(Bsz, nc, L, G, N))


def _lp(v_BCGRL):
  """[b, c, g, r, l] -> [b, c, l, g, r, 1]: a per-(token, head) scalar against x's layout."""
  return jnp.moveaxis(v_BCGRL, -1, 2)[..., None]


def _decay(a_BCGRL, transposed=False):
  """exp(a_l - a_s) for s <= l, else 0, as [.., l, s] or (transposed) [.., s, l]. Masked
  before the exp: a_l - a_s > 0 above the diagonal could overflow."""
  L = a_BCGRL.shape[-1]
  seg = a_BCGRL[..., :, None] - a_BCGRL[..., None, :]
  causal = jnp.tril(jnp.ones((L, L), bool))
  if transposed:
    seg, causal = -seg, causal.T
  return jnp.exp(jnp.where(causal, seg, -jnp.inf))


# Layouts. Token tensors are [b, c, g, l, (r p)] (time-major as the caller gives them: a
# reshape when G = 1) and the state is [b, c, g, n, (r p)]: the products of a chunk's tokens with
# the state of its group (one GEMM per chunk and group, over all its heads) then have operands
# in the row-major [M, K] @ [K, N] form XLA:CPU's dots take, without transposed copies. The
# [L, L] products are per head, on heads-first copies [b, c, g, r, l, p] of Xd and dy. All
# products are matmuls on explicit shapes: jnp.einsum may order contracted dimensions so that
# XLA copies both operands.


def _tok(v_BCLGRP):
  """[b, c, l, g, r, p] -> [b, c, g, l, (r p)]."""
  Bsz, nc, L, G, R, P = v_BCLGRP.shape
  return jnp.moveaxis(v_BCLGRP, 3, 2).reshape(Bsz, nc, G, L, R * P)


def _heads(v_BCGLX, R):
  """[b, c, g, l, (r p)] -> [b, c, g, r, l, p]."""
  Bsz, nc, G, L, X = v_BCGLX.shape
  return jnp.moveaxis(v_BCGLX.reshape(Bsz, nc, G, L, R, X // R), 4, 3)


def _from_heads(v_BCGRLP):
  Bsz, nc, G, R, L, P = v_BCGRLP.shape
  return jnp.moveaxis(v_BCGRLP, 3, 4).reshape(Bsz, nc, G, L, R * P)


def _per_token(v_BCGRL, P):
  """A per-(head, token) scalar [b, c, g, r, l] against [b, c, g, l, (r p)]."""
  Bsz, nc, G, R, L = v_BCGRL.shape
  return jnp.broadcast_to(jnp.swapaxes(v_BCGRL, 3, 4)[..., None],
                          (Bsz, nc, G, L, R, P)).reshape(Bsz, nc, G, L, R * P)


def _forward(L, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN):
  Bsz, T, H, P = x_BTHP.shape
  G = B_BTGN.shape[2]
  R = H // G
  x_BCLGRP, dt_BCGRL, a_BCGRL, B_BCLGN, C_BCLGN = _chunks(L, x_BTHP, dt_BTH, A_H, B_BTGN,
                                                          C_BTGN)
  acc = x_BCLGRP.dtype
  B_BCGLN, C_BCGLN = jnp.moveaxis(B_BCLGN, 3, 2), jnp.moveaxis(C_BCLGN, 3, 2)
  xd_BCGLX = _tok(x_BCLGRP) * _per_token(dt_BCGRL, P)        # dt_s x_s

  # 1. Intra-chunk: y_l = sum_{s<=l} (C_l·B_s) exp(a_l - a_s) dt_s x_s.
  cb_BCGLS = C_BCGLN @ jnp.swapaxes(B_BCGLN, -1, -2)
  m_BCGRLS = cb_BCGLS[:, :, :, None] * _decay(a_BCGRL)
  y_BCGRLP = m_BCGRLS @ _heads(xd_BCGLX, R)

  # 2. What each chunk adds to the state, seen from the chunk's end.
  a_end_BCGR = a_BCGRL[..., -1]
  w_end_BCGRL = jnp.exp(a_end_BCGR[..., None] - a_BCGRL)
  s_BCGNX = jnp.swapaxes(B_BCGLN, -1, -2) @ (xd_BCGLX * _per_token(w_end_BCGRL, P))

  # 3. The only sequential part: carry the state across the nc chunks.
  def carry(h_BGNX, inputs):
    s_BGNX, a_end_BGR = inputs
    return _per_head(jnp.exp(a_end_BGR), P) * h_BGNX + s_BGNX, h_BGNX

  h_end_BGNX, h_in_CBGNX = jax.lax.scan(
      carry, _state_in(h0_BHPN.astype(acc), G),
      (jnp.moveaxis(s_BCGNX, 1, 0), jnp.moveaxis(a_end_BCGR, 1, 0)))
  h_in_BCGNX = jnp.moveaxis(h_in_CBGNX, 0, 1)

  # 4. The state entering each chunk, decayed to position l and read out by C_l.
  y_BCGLX = ((C_BCGLN @ h_in_BCGNX) * _per_token(jnp.exp(a_BCGRL), P)
             + _from_heads(y_BCGRLP))
  y_BTHP = jnp.moveaxis(y_BCGLX, 2, 3).reshape(Bsz, -1, H, P)[:, :T]
  return ((y_BTHP.astype(x_BTHP.dtype), _state_out(h_end_BGNX, R)),
          (y_BCGLX, h_in_BCGNX, h_end_BGNX))


def _per_head(v_BGR, P):
  """A per-head scalar [..., g, r] against a state [..., g, n, (r p)]."""
  return jnp.repeat(v_BGR, P, axis=-1)[..., None, :]


def _state_in(h_BHPN, G):
  """[b, h, p, n] -> [b, g, n, (r p)]."""
  Bsz, H, P, N = h_BHPN.shape
  return jnp.moveaxis(h_BHPN.reshape(Bsz, G, H // G, P, N), -1, 2).reshape(Bsz, G, N, -1)


def _state_out(h_BGNX, R):
  Bsz, G, N, X = h_BGNX.shape
  return jnp.moveaxis(h_BGNX.reshape(Bsz, G, N, R, X // R), 2, -1).reshape(Bsz, G * R, -1, N)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ssd(L, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN):
  return _forward(L, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN)[0]


def _ssd_fwd(L, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN):
  out, saved = _forward(L, x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN)
  return out, (x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN) + saved


def _ssd_bwd(L, res, cotangents):
  """The chunked algorithm's derivative, written out. With M = C Bᵀ ∘ decay and Xd = dt·x,
  the intra-chunk output is M Xd, so dXd = Mᵀ dY and dM = dY Xdᵀ; the state carried across
  chunks gets its cotangent from a reverse scan over chunks. The log-decays need no [L, L]
  reduction: every output term at l scales with exp(a_l) and every input term at s with
  exp(-a_s), so d(a_l) = dY_l·y_l - Xd_l·dXd_l, plus <dh_out, h_out> at the chunk's end.
  Sums are written as dots or as adds of slices: XLA:CPU's reduce fusions are slow."""
  (x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, h0_BHPN, y_BCGLX, h_in_BCGNX, h_end_BGNX) = res
  dy_BTHP, dhT_BHPN = cotangents
  Bsz, T, H, P = x_BTHP.shape
  G, N = B_BTGN.shape[2:]
  R = H // G
  x_BCLGRP, dt_BCGRL, a_BCGRL, B_BCLGN, C_BCLGN = _chunks(L, x_BTHP, dt_BTH, A_H, B_BTGN,
                                                          C_BTGN)
  acc = x_BCLGRP.dtype
  B_BCGLN, C_BCGLN = jnp.moveaxis(B_BCLGN, 3, 2), jnp.moveaxis(C_BCLGN, 3, 2)
  (dy,) = pad_time(T, L, dy_BTHP.astype(acc))
  dy_BCGLX = _tok(dy.reshape(x_BCLGRP.shape))
  x_BCGLX = _tok(x_BCLGRP)
  xd_BCGLX = x_BCGLX * _per_token(dt_BCGRL, P)
  a_end_BCGR = a_BCGRL[..., -1]
  w_end_BCGRL = jnp.exp(a_end_BCGR[..., None] - a_BCGRL)

  # Intra-chunk term y = M Xd, with Mᵀ built as such (no transposed copy).
  decay_BCGRSL = _decay(a_BCGRL, transposed=True)
  bc_BCGSL = B_BCGLN @ jnp.swapaxes(C_BCGLN, -1, -2)
  mT_BCGRSL = bc_BCGSL[:, :, :, None] * decay_BCGRSL
  dy_BCGRLP = _heads(dy_BCGLX, R)
  dxd_BCGRSP = mT_BCGRSL @ dy_BCGRLP
  dmT_BCGRSL = _heads(xd_BCGLX, R) @ jnp.swapaxes(dy_BCGRLP, -1, -2)
  dbc_BCGSL = sum(dmT_BCGRSL[:, :, :, r] * decay_BCGRSL[:, :, :, r] for r in range(R))
  dB_BCGLN = dbc_BCGSL @ C_BCGLN
  dC_BCGLN = jnp.swapaxes(dbc_BCGSL, -1, -2) @ B_BCGLN

  # Read-out of the entering state, y += exp(a_l) C_l h_inᵀ.
  dye_BCGLX = dy_BCGLX * _per_token(jnp.exp(a_BCGRL), P)
  dC_BCGLN += dye_BCGLX @ jnp.swapaxes(h_in_BCGNX, -1, -2)
  q_BCGNX = jnp.swapaxes(C_BCGLN, -1, -2) @ dye_BCGLX

  # Reverse scan over chunks: the cotangent of the state leaving each chunk.
  def carry(g_BGNX, inputs):
    q_BGNX, a_end_BGR = inputs
    return _per_head(jnp.exp(a_end_BGR), P) * g_BGNX + q_BGNX, g_BGNX

  dh0_BGNX, dh_out_CBGNX = jax.lax.scan(
      carry, _state_in(dhT_BHPN.astype(acc), G),
      (jnp.moveaxis(q_BCGNX, 1, 0), jnp.moveaxis(a_end_BCGR, 1, 0)), reverse=True)
  dh_out_BCGNX = jnp.moveaxis(dh_out_CBGNX, 0, 1)

  # The chunk's state: h_out = exp(a_end) h_in + sum_s exp(a_end - a_s) Xd_s B_sᵀ.
  w_BCGLX = _per_token(w_end_BCGRL, P)
  dxd_BCGLX = (B_BCGLN @ dh_out_BCGNX) * w_BCGLX + _from_heads(dxd_BCGRSP)
  dB_BCGLN += (xd_BCGLX * w_BCGLX) @ jnp.swapaxes(dh_out_BCGNX, -1, -2)

  # Log-decays (docstring), then a = in-chunk cumsum of dt·A: d(dt·A) is the reverse
  # in-chunk cumsum of da.
  per_head = lambda v_BCGLX: v_BCGLX.reshape(*v_BCGLX.shape[:4], R, P)
  xdxd_BCGLR = _dot_last(per_head(x_BCGLX), per_head(dxd_BCGLX))
  da_BCGRL = jnp.swapaxes(_dot_last(per_head(dy_BCGLX), per_head(y_BCGLX))
                          - xdxd_BCGLR * jnp.swapaxes(dt_BCGRL, -1, -2), -1, -2)
  h_out_BCGNX = jnp.concatenate([h_in_BCGNX[:, 1:], h_end_BGNX[:, None]], axis=1)
  by_head = lambda v: jnp.swapaxes(v.reshape(*v.shape[:3], N, R, P), 3, 4).reshape(
      *v.shape[:3], R, N * P)
  da_end_BCGR = _dot_last(by_head(dh_out_BCGNX), by_head(h_out_BCGNX))
  da_BCGRL = da_BCGRL.at[..., -1].add(da_end_BCGR)
  d_dtA_BCGRL = jnp.matmul(da_BCGRL, jnp.tril(jnp.ones((L, L), acc)), precision=_HIGHEST)
  ddt_BCGRL = (jnp.swapaxes(xdxd_BCGLR, -1, -2)
               + A_H.astype(acc).reshape(G, R, 1) * d_dtA_BCGRL)
  dA_GR = jnp.einsum("bcgrl,bcgrl->gr", dt_BCGRL, d_dtA_BCGRL)
  dx_BCGLX = dxd_BCGLX * _per_token(dt_BCGRL, P)
  untok = lambda v_BCGLX: jnp.moveaxis(v_BCGLX, 2, 3).reshape(Bsz, -1, G, v_BCGLX.shape[-1])[:, :T]
  return (untok(dx_BCGLX).reshape(x_BTHP.shape).astype(x_BTHP.dtype),
          untok(jnp.swapaxes(ddt_BCGRL, -1, -2)).reshape(dt_BTH.shape).astype(dt_BTH.dtype),
          dA_GR.reshape(H).astype(A_H.dtype),
          untok(dB_BCGLN).astype(B_BTGN.dtype),
          untok(dC_BCGLN).astype(C_BTGN.dtype),
          _state_out(dh0_BGNX, R).astype(h0_BHPN.dtype))


def _dot_last(u, v):
  """sum(u * v, axis=-1), as a batched dot."""
  return jnp.einsum("...p,...p->...", u, v)


_ssd.defvjp(_ssd_fwd, _ssd_bwd)
