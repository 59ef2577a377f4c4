"""One token of the selective scan on 2-D tiles: the math shared by the TPU and Triton bodies.

The state tile is x_NB: state index n on rows, a block of channels d on columns (lanes on
TPU), so per-token rows of u / delta / dy ([1, bd]) broadcast down the rows and per-token
B / C values are [N, 1] columns. Everything is elementwise work plus reductions with
keepdims, which lower for Mosaic TPU and Triton alike (no matmuls: the decay is diagonal).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def step_fwd(x_NB, A_NB, d_1B, u_1B, b_N1):
  """x_t = exp(delta_t A) x_{t-1} + (delta_t u_t) B_t."""
  return jnp.exp(d_1B * A_NB) * x_NB + b_N1 * (d_1B * u_1B)


def readout(x_NB, c_N1):
  """y_t = Σ_n C_t[n] x_t[n, :], as a [1, bd] row."""
  return jnp.sum(x_NB * c_N1, axis=0, keepdims=True)


def step_bwd(x_prev_NB, dh_NB, A_NB, d_1B, u_1B, b_N1, c_N1, dy_1B):
  """Backward of one token, given x_{t-1} and dh = dL/dx_t from later tokens.

  Returns (dh_prev_NB, du_1B, ddelta_1B, dB_N1, dC_N1, dA_NB): dh_prev is dL/dx_{t-1}
  and dA is this token's contribution to the gradient of A.
  """
  a_NB = jnp.exp(d_1B * A_NB)
  du_in_1B = d_1B * u_1B
  x_NB = a_NB * x_prev_NB + b_N1 * du_in_1B
  g_NB = dh_NB + c_N1 * dy_1B                    # total dL/dx_t
  dlog_NB = g_NB * x_prev_NB * a_NB              # dL/d(delta_t A)
  gb_1B = jnp.sum(g_NB * b_N1, axis=0, keepdims=True)
  return (a_NB * g_NB,
          d_1B * gb_1B,
          jnp.sum(dlog_NB * A_NB, axis=0, keepdims=True) + u_1B * gb_1B,
          jnp.sum(g_NB * du_in_1B, axis=1, keepdims=True),
          jnp.sum(x_NB * dy_1B, axis=1, keepdims=True),
          dlog_NB * d_1B)


def pick_column(v_NL, t):
  """Column t of a [N, L] tile as [N, 1], by a masked lane reduction: a dynamic lane
  index would need a relayout on TPU. Costs N·L per token, vs N·bd for the step itself."""
  lane = lax.broadcasted_iota(jnp.int32, (1, v_NL.shape[1]), 1)
  return jnp.sum(jnp.where(lane == t, v_NL, 0.0), axis=1, keepdims=True)
