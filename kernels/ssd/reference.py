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

Both accumulate in promote_types(dtype, float32) and return (y in x.dtype, final state in
the accumulation dtype).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def acc_dtype(*arrays) -> jnp.dtype:
  """Accumulation dtype: float32, or float64 when an input already is."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def ssd_naive(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN, initial_state_BHPN=None):
  """Token-by-token recurrence. Returns (y_BTHP, final_state_BHPN)."""
  Bsz, T, H, P = x_BTHP.shape
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
  """Chunked SSD in jnp (differentiable by autodiff). Returns (y_BTHP, final_state_BHPN)."""
  Bsz, T, H, P = x_BTHP.shape
  G, N = B_BTGN.shape[2:]
  R, L = H // G, chunk_size
  acc = acc_dtype(x_BTHP, dt_BTH, A_H, B_BTGN, C_BTGN)
  x, dt, Bm, Cm = pad_time(T, L, *(a.astype(acc) for a in (x_BTHP, dt_BTH, B_BTGN, C_BTGN)))
  nc = x.shape[1] // L
  # Split time into (chunk c, position l) and heads into (group g, head-in-group r).
  x_BCLGRP = x.reshape(Bsz, nc, L, G, R, P)
  dt_BCGRL = jnp.moveaxis(dt.reshape(Bsz, nc, L, G, R), 2, -1)
  B_BCLGN = Bm.reshape(Bsz, nc, L, G, N)
  C_BCLGN = Cm.reshape(Bsz, nc, L, G, N)
  # Log-decay summed from the chunk start up to and including position l (always <= 0).
  a_BCGRL = jnp.cumsum(dt_BCGRL * A_H.astype(acc).reshape(G, R, 1), axis=-1)

  # 1. Intra-chunk: y_l = sum_{s<=l} (C_l·B_s) exp(a_l - a_s) dt_s x_s.
  #    Mask before exp: a_l - a_s > 0 above the diagonal could overflow.
  causal_LS = jnp.tril(jnp.ones((L, L), bool))
  seg_BCGRLS = a_BCGRL[..., :, None] - a_BCGRL[..., None, :]
  decay_BCGRLS = jnp.exp(jnp.where(causal_LS, seg_BCGRLS, -jnp.inf))
  cb_BCGLS = jnp.einsum("bclgn,bcsgn->bcgls", C_BCLGN, B_BCLGN)
  w_BCGRLS = cb_BCGLS[:, :, :, None] * decay_BCGRLS * dt_BCGRL[..., None, :]
  y_BCLGRP = jnp.einsum("bcgrls,bcsgrp->bclgrp", w_BCGRLS, x_BCLGRP)

  # 2. What each chunk adds to the state, seen from the chunk's end.
  a_end_BCGR = a_BCGRL[..., -1]
  w_end_BCGRL = jnp.exp(a_end_BCGR[..., None] - a_BCGRL) * dt_BCGRL
  s_BCGRPN = jnp.einsum("bclgrp,bcgrl,bclgn->bcgrpn", x_BCLGRP, w_end_BCGRL, B_BCLGN)

  # 3. The only sequential part: carry the P×N state across the nc chunks.
  def carry(h_BGRPN, inputs):
    s_BGRPN, a_end_BGR = inputs
    return jnp.exp(a_end_BGR)[..., None, None] * h_BGRPN + s_BGRPN, h_BGRPN

  h0 = (jnp.zeros((Bsz, H, P, N), acc) if initial_state_BHPN is None
        else initial_state_BHPN.astype(acc))
  h_end_BGRPN, h_in_CBGRPN = jax.lax.scan(
      carry, h0.reshape(Bsz, G, R, P, N),
      (jnp.moveaxis(s_BCGRPN, 1, 0), jnp.moveaxis(a_end_BCGR, 1, 0)))

  # 4. The state entering each chunk, decayed to position l and read out by C_l.
  y_BCLGRP += jnp.einsum("bclgn,cbgrpn,bcgrl->bclgrp", C_BCLGN, h_in_CBGRPN,
                         jnp.exp(a_BCGRL))
  y_BTHP = y_BCLGRP.reshape(Bsz, nc * L, H, P)[:, :T]
  return y_BTHP.astype(x_BTHP.dtype), h_end_BGRPN.reshape(Bsz, H, P, N)
