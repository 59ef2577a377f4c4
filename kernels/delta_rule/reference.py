"""Delta rule / gated delta rule in plain jnp: the per-token oracle and the chunked (WY) "xla" path.

Recurrence per (batch, head), state S_KV (dk x dv), q scaled by `scale`:
  S_t = exp(g_t) * S_{t-1}               (gated rule only; g_t <= 0 is a log-decay)
  u_t = beta_t * (v_t - S_t^T k_t)
  S_t = S_t + k_t u_t^T
  o_t = S_t^T (scale * q_t)

The chunked form (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length"; gated: Yang et al. 2024, "Gated Delta Networks") splits T into chunks of C tokens.
With gc = cumsum(g) inside the chunk, gamma_i = exp(gc_i), Gam_ij = exp(gc_i - gc_j) (i >= j):
  A  = tril(diag(beta) K K^T * Gam, -1),   Tm = (I + A)^-1   (unit lower triangular)
  W  = Tm (diag(beta * gamma) K),          U  = Tm (diag(beta) V)
and per chunk, with S the state entering it:
  Vn = U - W S                             (the u_t of every token, all at once)
  O  = diag(gamma) Q S + (tril(Q K^T) * Gam) Vn
  S' = gamma_C S + (diag(exp(gc_C - gc)) K)^T Vn
Both functions here are differentiable by ordinary autodiff; the chunked one puts a custom_vjp on
the triangular inverse only (autodiff through a substitution loop is slow and memory-hungry: it
saves every step of the loop).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST
_ein = functools.partial(jnp.einsum, precision=HIGHEST)


def acc_dtype(dtype) -> jnp.dtype:
  """f32 accumulation, or f64 when the inputs are f64."""
  return jnp.promote_types(dtype, jnp.float32)


def fill_defaults(q_BTHK, v_BTHV, g_BTH, initial_state_BHKV, scale):
  B, T, H, K = q_BTHK.shape
  V = v_BTHV.shape[-1]
  acc = acc_dtype(q_BTHK.dtype)
  if g_BTH is None:
    g_BTH = jnp.zeros((B, T, H), acc)
  if initial_state_BHKV is None:
    initial_state_BHKV = jnp.zeros((B, H, K, V), acc)
  if scale is None:
    scale = K ** -0.5
  return g_BTH, initial_state_BHKV.astype(acc), scale, acc


def delta_rule_naive(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH=None, initial_state_BHKV=None,
                     scale=None):
  """The oracle: one lax.scan step per token. Returns (o_BTHV, final_state_BHKV)."""
  g_BTH, s0_BHKV, scale, acc = fill_defaults(q_BTHK, v_BTHV, g_BTH, initial_state_BHKV, scale)
  # time-major so lax.scan walks tokens
  xs = [jnp.moveaxis(x.astype(acc), 1, 0) for x in (q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH)]

  def step(s_BHKV, x):
    q_BHK, k_BHK, v_BHV, b_BH, g_BH = x
    s_BHKV = jnp.exp(g_BH)[..., None, None] * s_BHKV
    u_BHV = b_BH[..., None] * (v_BHV - _ein("bhkv,bhk->bhv", s_BHKV, k_BHK))
    s_BHKV = s_BHKV + k_BHK[..., :, None] * u_BHV[..., None, :]
    o_BHV = _ein("bhkv,bhk->bhv", s_BHKV, scale * q_BHK)
    return s_BHKV, o_BHV

  sT_BHKV, o_TBHV = lax.scan(step, s0_BHKV, xs)
  return jnp.moveaxis(o_TBHV, 0, 1).astype(v_BTHV.dtype), sT_BHKV


# ------------------------------------------------------------------------------------------------
# (I + A)^-1 for strictly-lower A.  Not solve_triangular: batched triangular solves inside
# fwd+bwd deadlock XLA:CPU's thread pool on small machines.  Forward substitution is exact even
# for identical keys (a power series is not), but each of its C steps touches the whole matrix,
# so it runs on 16x16 diagonal blocks only and the blocks are merged with matmuls:
#   [[M11, 0], [M21, M22]]^-1 = [[T11, 0], [-T22 M21 T11, T22]]     (Tii = Mii^-1)
# (4x faster than substitution over all 64 rows at T=4096 on CPU).
_BASE = 16


def _substitute(a_XCC):
  C = a_XCC.shape[-1]
  eye_CC = jnp.eye(C, dtype=a_XCC.dtype)

  def row(i, t_XCC):
    # T_i = e_i - sum_{j<i} A_ij T_j: rows j >= i of T are still e_j but A_ij = 0 there.
    a_X1C = lax.dynamic_slice_in_dim(a_XCC, i, 1, axis=-2)
    e_1C = lax.dynamic_slice_in_dim(eye_CC, i, 1, axis=-2)
    t_X1C = e_1C - jnp.matmul(a_X1C, t_XCC, precision=HIGHEST)
    return lax.dynamic_update_slice_in_dim(t_XCC, t_X1C, i, axis=-2)

  return lax.fori_loop(1, C, row, jnp.broadcast_to(eye_CC, a_XCC.shape))


def _blocked_inverse(a_XCC):
  C = a_XCC.shape[-1]
  n = min(C, _BASE)
  diag = [a_XCC[..., i:i + n, i:i + n] for i in range(0, C, n)]
  t_XMnn = _substitute(jnp.stack(diag, axis=-3))  # all diagonal blocks in one loop
  while t_XMnn.shape[-3] > 1:
    t11, t22 = t_XMnn[..., 0::2, :, :], t_XMnn[..., 1::2, :, :]
    a21 = jnp.stack([a_XCC[..., i + n:i + 2 * n, i:i + n] for i in range(0, C, 2 * n)], axis=-3)
    t21 = -jnp.matmul(jnp.matmul(t22, a21, precision=HIGHEST), t11, precision=HIGHEST)
    top = jnp.concatenate([t11, jnp.zeros_like(t11)], axis=-1)
    t_XMnn = jnp.concatenate([top, jnp.concatenate([t21, t22], axis=-1)], axis=-2)
    n *= 2
  return t_XMnn[..., 0, :, :]


@jax.custom_vjp
def unit_lower_inverse(a_XCC):
  """(I + A)^-1 for A strictly lower triangular (batched over leading axes)."""
  return _blocked_inverse(a_XCC)


def _inv_fwd(a_XCC):
  t_XCC = _blocked_inverse(a_XCC)
  return t_XCC, t_XCC


def _inv_bwd(t_XCC, dt_XCC):
  # d(M^-1) = -M^-1 dM M^-1  =>  dA = -T^T dT T^T, and only the strict lower triangle is free.
  tT_XCC = jnp.swapaxes(t_XCC, -1, -2)
  da_XCC = -jnp.matmul(jnp.matmul(tT_XCC, dt_XCC, precision=HIGHEST), tT_XCC, precision=HIGHEST)
  return (jnp.tril(da_XCC, -1),)


unit_lower_inverse.defvjp(_inv_fwd, _inv_bwd)


# ------------------------------------------------------------------------------------------------


def to_chunks(x_BTH_, C: int):
  """[B, T, H, ...] -> [B, H, N, C, ...], zero-padding T up to N*C.

  Zero padding is exact: a padded token has beta = 0, k = 0, g = 0, so it leaves the state alone
  (decay exp(0) = 1, write beta k u^T = 0), and its output row is sliced off.
  """
  B, T, H = x_BTH_.shape[:3]
  N = -(-T // C)
  pad = [(0, 0), (0, N * C - T)] + [(0, 0)] * (x_BTH_.ndim - 2)
  x = jnp.pad(x_BTH_, pad)
  x = x.reshape((B, N, C, H) + x_BTH_.shape[3:])
  return jnp.moveaxis(x, 3, 1)


def from_chunks(x_BHNC_, T: int):
  """[B, H, N, C, ...] -> [B, T, H, ...], dropping the padding."""
  B, H, N, C = x_BHNC_.shape[:4]
  x = jnp.moveaxis(x_BHNC_, 1, 3).reshape((B, N * C, H) + x_BHNC_.shape[4:])
  return x[:, :T]


def decay_matrix(gc_XC):
  """Gam_ij = exp(gc_i - gc_j) on and below the diagonal, 0 above (masked before exp: no inf)."""
  C = gc_XC.shape[-1]
  incl_CC = jnp.tril(jnp.ones((C, C), bool))
  diff_XCC = gc_XC[..., :, None] - gc_XC[..., None, :]
  return jnp.where(incl_CC, jnp.exp(jnp.where(incl_CC, diff_XCC, 0.0)), 0.0)


def delta_rule_chunked(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH=None, initial_state_BHKV=None,
                       scale=None, chunk_size=64):
  """Chunked WY form: parallel work inside each chunk, a lax.scan over chunks carrying S."""
  g_BTH, s0_BHKV, scale, acc = fill_defaults(q_BTHK, v_BTHV, g_BTH, initial_state_BHKV, scale)
  T, C = q_BTHK.shape[1], chunk_size
  q, k, v = (to_chunks(x.astype(acc), C) for x in (q_BTHK.astype(acc) * scale, k_BTHK, v_BTHV))
  b_BHNC, g_BHNC = (to_chunks(x.astype(acc), C) for x in (beta_BTH, g_BTH))
  gc_BHNC = jnp.cumsum(g_BHNC, axis=-1)
  gam_BHNCC = decay_matrix(gc_BHNC)

  a = jnp.tril(b_BHNC[..., :, None] * _ein("bhnik,bhnjk->bhnij", k, k) * gam_BHNCC, -1)
  t_BHNCC = unit_lower_inverse(a)
  w_BHNCK = _ein("bhnij,bhnjk->bhnik", t_BHNCC, k * (b_BHNC * jnp.exp(gc_BHNC))[..., None])
  u_BHNCV = _ein("bhnij,bhnjv->bhniv", t_BHNCC, v * b_BHNC[..., None])
  p_BHNCC = _ein("bhnik,bhnjk->bhnij", q, k) * gam_BHNCC
  gl_BHN = gc_BHNC[..., -1]
  kdec_BHNCK = k * jnp.exp(gl_BHN[..., None] - gc_BHNC)[..., None]

  def chunk(s_BHKV, x):
    q_BHCK, w_BHCK, u_BHCV, p_BHCC, kd_BHCK, gc_BHC, gl_BH = x
    vn_BHCV = u_BHCV - _ein("bhck,bhkv->bhcv", w_BHCK, s_BHKV)
    o_BHCV = (jnp.exp(gc_BHC)[..., None] * _ein("bhck,bhkv->bhcv", q_BHCK, s_BHKV)
              + _ein("bhij,bhjv->bhiv", p_BHCC, vn_BHCV))
    s_BHKV = jnp.exp(gl_BH)[..., None, None] * s_BHKV + _ein("bhck,bhcv->bhkv", kd_BHCK, vn_BHCV)
    return s_BHKV, o_BHCV

  xs = [jnp.moveaxis(x, 2, 0) for x in (q, w_BHNCK, u_BHNCV, p_BHNCC, kdec_BHNCK, gc_BHNC, gl_BHN)]
  sT_BHKV, o_NBHCV = lax.scan(chunk, s0_BHKV, xs)
  o_BTHV = from_chunks(jnp.moveaxis(o_NBHCV, 0, 2), T)
  return o_BTHV.astype(v_BTHV.dtype), sT_BHKV
