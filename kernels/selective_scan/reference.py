"""Mamba-1 selective scan in plain jnp: the oracle and the chunked "xla" path.

Per channel d and state index n (diagonal A):
    x_t = exp(delta_t A) ∘ x_{t-1} + (delta_t u_t) B_t        y_t = Σ_n x_t C_t

`selective_scan_naive` is the token-by-token lax.scan: the oracle, float64-capable.

`selective_scan_chunked` is a two-level scan (chunks of L tokens, tokens within a chunk)
with a hand-written backward. The matmul trick of SSD does not apply (the decay differs per
(d, n)), and on CPU the vectorised forms lose to a plain scan: an associative scan within
chunks moves several [B, T, D, N] tensors through memory and was 4-9× slower than the token
scan (benchmarks/bench_ssm.py keeps that row). What is slow in the token scan is its
autodiff reverse pass, which stores and re-reads every state. So:
  * forward: the token recurrence, saving only the state entering each chunk;
  * backward: chunks last to first; recompute the chunk's L states from its saved entry
    state (an L-token working set that stays in cache), then one reverse token scan that
    computes every gradient of a token in the same step as the adjoint recurrence
    g_{t-1} = exp(delta_t A) g_t (+ C_{t-1} dy_{t-1}), so nothing of size [B, T, D, N]
    is ever materialised.
The Pallas kernels implement the same algorithm (entry states saved, per-chunk recompute).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def acc_dtype(*arrays) -> jnp.dtype:
  """Accumulation dtype: float32, or float64 when an input already is."""
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def selective_scan_naive(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN, initial_state_BDN=None):
  """Token-by-token recurrence. Returns (y_BTD, final_state_BDN)."""
  Bsz, _, D = u_BTD.shape
  acc = acc_dtype(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN)
  A = A_DN.astype(acc)
  x_BDN = (jnp.zeros((Bsz, D, A.shape[1]), acc) if initial_state_BDN is None
           else initial_state_BDN.astype(acc))

  def step(x_BDN, inputs):
    u_BD, d_BD, B_BN, C_BN = inputs
    x_BDN = jnp.exp(d_BD[..., None] * A) * x_BDN + (d_BD * u_BD)[..., None] * B_BN[:, None, :]
    return x_BDN, jnp.einsum("bdn,bn->bd", x_BDN, C_BN)

  time_major = lambda a: jnp.moveaxis(a.astype(acc), 1, 0)
  x_BDN, y_TBD = jax.lax.scan(step, x_BDN, tuple(map(time_major, (u_BTD, delta_BTD, B_BTN,
                                                                   C_BTN))))
  return jnp.moveaxis(y_TBD, 0, 1).astype(u_BTD.dtype), x_BDN


def selective_scan_chunked(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN, initial_state_BDN=None,
                           chunk_size: int = 64):
  """Chunked scan with a hand-written backward (see module doc). Same contract as the oracle.

  T needs not be a multiple of chunk_size: the tail is padded with delta = 0, whose step
  has decay exp(0) = 1 and input 0, so the state passes through unchanged.
  """
  Bsz, T, D = u_BTD.shape
  acc = acc_dtype(u_BTD, delta_BTD, A_DN, B_BTN, C_BTN)
  h0 = (jnp.zeros((Bsz, D, A_DN.shape[1]), acc) if initial_state_BDN is None
        else initial_state_BDN)
  pad = lambda a: jnp.pad(a, [(0, 0), (0, -T % chunk_size)] + [(0, 0)] * (a.ndim - 2))
  y_BTD, xT_BDN = _scan(chunk_size, pad(u_BTD), pad(delta_BTD), A_DN, pad(B_BTN), pad(C_BTN), h0)
  return y_BTD[:, :T], xT_BDN


def _to_chunks(a, L):
  """[B, T, ...] -> [T/L, L, B, ...]: chunk-major, then token-major, as scan wants."""
  return jnp.moveaxis(a.reshape(a.shape[0], -1, L, *a.shape[2:]), (1, 2), (0, 1))


def _from_chunks(a):
  return jnp.moveaxis(a, (0, 1), (1, 2)).reshape(a.shape[2], -1, *a.shape[3:])


def _token(x_BDN, A_DN, u_BD, d_BD, B_BN):
  """One step of the recurrence."""
  return jnp.exp(d_BD[..., None] * A_DN) * x_BDN + (d_BD * u_BD)[..., None] * B_BN[:, None, :]


def _forward(L, u, delta, A, B, C, h0):
  acc = acc_dtype(u, delta, A, B, C)
  A = A.astype(acc)

  def chunk(x_BDN, inputs):
    def token(x_BDN, inputs):
      u_BD, d_BD, B_BN, C_BN = inputs
      x_BDN = _token(x_BDN, A, u_BD, d_BD, B_BN)
      return x_BDN, jnp.einsum("bdn,bn->bd", x_BDN, C_BN)

    x_end, y_LBD = jax.lax.scan(token, x_BDN, inputs)
    return x_end, (y_LBD, x_BDN)

  chunks = tuple(_to_chunks(v.astype(acc), L) for v in (u, delta, B, C))
  xT, (y, x0s) = jax.lax.scan(chunk, h0.astype(acc), chunks)
  return (_from_chunks(y).astype(u.dtype), xT), x0s


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(L, u, delta, A, B, C, h0):
  return _forward(L, u, delta, A, B, C, h0)[0]


def _scan_fwd(L, u, delta, A, B, C, h0):
  out, x0s = _forward(L, u, delta, A, B, C, h0)
  return out, (u, delta, A, B, C, h0, x0s)


def _scan_bwd(L, res, cotangents):
  u, delta, A, B, C, h0, x0s = res
  dy, dxT = cotangents
  acc = x0s.dtype
  Aa = A.astype(acc)

  def chunk(carry, inputs):
    u_LBD, d_LBD, B_LBN, C_LBN, dy_LBD, x0_BDN = inputs

    def recompute(x_BDN, inputs):     # emits the state entering each token
      return _token(x_BDN, Aa, *inputs), x_BDN

    _, x_in_LBDN = jax.lax.scan(recompute, x0_BDN, (u_LBD, d_LBD, B_LBN))

    def token(carry, inputs):
      g_BDN, dA_DN = carry            # g: dL/d(state after this token) from later tokens
      u_BD, d_BD, B_BN, C_BN, dy_BD, x_prev_BDN = inputs
      a_BDN = jnp.exp(d_BD[..., None] * Aa)
      du_BD = d_BD * u_BD
      x_BDN = a_BDN * x_prev_BDN + du_BD[..., None] * B_BN[:, None, :]
      g_BDN = g_BDN + C_BN[:, None, :] * dy_BD[..., None]     # + the readout y = x C
      dlog_BDN = g_BDN * x_prev_BDN * a_BDN                    # dL/d(delta A)
      gB_BD = jnp.einsum("bdn,bn->bd", g_BDN, B_BN)
      grads = (d_BD * gB_BD,                                            # du
               jnp.einsum("bdn,dn->bd", dlog_BDN, Aa) + u_BD * gB_BD,   # ddelta
               jnp.einsum("bdn,bd->bn", g_BDN, du_BD),                  # dB
               jnp.einsum("bdn,bd->bn", x_BDN, dy_BD))                  # dC
      dA_DN = dA_DN + jnp.einsum("bdn,bd->dn", dlog_BDN, d_BD)
      return (a_BDN * g_BDN, dA_DN), grads

    return jax.lax.scan(token, carry, (u_LBD, d_LBD, B_LBN, C_LBN, dy_LBD, x_in_LBDN),
                        reverse=True)

  chunks = tuple(_to_chunks(v.astype(acc), L) for v in (u, delta, B, C, dy))
  (dh0, dA), (du, dd, dB, dC) = jax.lax.scan(
      chunk, (dxT.astype(acc), jnp.zeros(A.shape, acc)), chunks + (x0s,), reverse=True)
  return (_from_chunks(du).astype(u.dtype), _from_chunks(dd).astype(delta.dtype),
          dA.astype(A.dtype), _from_chunks(dB).astype(B.dtype), _from_chunks(dC).astype(C.dtype),
          dh0.astype(h0.dtype))


_scan.defvjp(_scan_fwd, _scan_bwd)
