"""Mamba-1 selective scan in plain jnp: the oracle and the chunked "xla" path.

Per channel d and state index n (diagonal A):
    x_t = exp(delta_t A) ∘ x_{t-1} + (delta_t u_t) B_t        y_t = Σ_n x_t C_t

`selective_scan_naive` is the token-by-token lax.scan: the oracle, float64-capable.

`selective_scan_chunked` is a two-level scan with a hand-written backward. The matmul
trick of SSD does not apply (the decay differs per (d, n)), and measured on CPU the
vectorised forms lose to the plain scan: an associative scan within chunks, or a scan over
chunk positions batched across chunks, move several [B, T, D, N] tensors through memory
and were 3-5× slower than the token scan in fwd+bwd (benchmarks/bench_ssm.py keeps the
numbers). What is slow in the token scan is its autodiff reverse pass, so this path keeps
the sequential recurrence and writes the backward by hand:
  * forward: scan over chunks of L tokens; inside a chunk the per-token factors
    exp(delta A) and delta u B are computed for the whole chunk at once, so the inner loop
    is one fused multiply-add per token; only the state entering each chunk is saved;
  * backward: chunks last to first; recompute the chunk's states from its saved entry
    state (an L-token working set that stays in cache), run the adjoint recurrence
    g_t = exp(delta_{t+1} A) g_{t+1} + C_t dy_t backwards, then every parameter gradient
    is a batched contraction over the chunk.
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


def _chunk_states(x0_BDN, u_LBD, d_LBD, B_LBN, A_DN):
  """Per-token decay a and the states entering each token of one chunk (both [L, B, D, N]).

  Returns (a, x_in, x_end): x_in[t] is the state before token t, x_end after the chunk."""
  a_LBDN = jnp.exp(d_LBD[..., None] * A_DN)
  b_LBDN = (d_LBD * u_LBD)[..., None] * B_LBN[:, :, None, :]

  def step(x, ab):
    return ab[0] * x + ab[1], x

  x_end, x_in = jax.lax.scan(step, x0_BDN, (a_LBDN, b_LBDN))
  return a_LBDN, x_in, x_end


def _forward(L, u, delta, A, B, C, h0):
  acc = acc_dtype(u, delta, A, B, C)
  A = A.astype(acc)

  def chunk(x_BDN, inputs):
    u_LBD, d_LBD, B_LBN, C_LBN = inputs
    a, x_in, x_end = _chunk_states(x_BDN, u_LBD, d_LBD, B_LBN, A)
    # Output from the state after token t: a_t x_in[t] + b_t, rebuilt without storing it.
    x_out = a * x_in + (d_LBD * u_LBD)[..., None] * B_LBN[:, :, None, :]
    return x_end, (jnp.einsum("lbdn,lbn->lbd", x_out, C_LBN), x_BDN)

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
    g_BDN, dA_DN = carry            # g: gradient w.r.t. the state at the chunk's end
    u_LBD, d_LBD, B_LBN, C_LBN, dy_LBD, x0_BDN = inputs
    a, x_in, _ = _chunk_states(x0_BDN, u_LBD, d_LBD, B_LBN, Aa)
    du_LBD = d_LBD * u_LBD
    x_out = a * x_in + du_LBD[..., None] * B_LBN[:, :, None, :]
    cdy_LBDN = C_LBN[:, :, None, :] * dy_LBD[..., None]

    # Adjoint recurrence, backwards: G_t = (a_{t+1} G_{t+1}) + C_t dy_t; carry a_t G_t.
    def step(ag, inputs):
      a_t, cdy_t = inputs
      G = ag + cdy_t
      return a_t * G, G

    g_BDN, G_LBDN = jax.lax.scan(step, g_BDN, (a, cdy_LBDN), reverse=True)
    dlogdecay = G_LBDN * x_in * a                     # d/d(delta_t A)
    GB_LBD = jnp.einsum("lbdn,lbn->lbd", G_LBDN, B_LBN)
    grads = (d_LBD * GB_LBD,                                           # du
             jnp.einsum("lbdn,dn->lbd", dlogdecay, Aa) + u_LBD * GB_LBD,  # ddelta
             jnp.einsum("lbdn,lbd->lbn", G_LBDN, du_LBD),                # dB
             jnp.einsum("lbdn,lbd->lbn", x_out, dy_LBD))                 # dC
    dA_DN = dA_DN + jnp.einsum("lbdn,lbd->dn", dlogdecay, d_LBD)
    return (g_BDN, dA_DN), grads

  chunks = tuple(_to_chunks(v.astype(acc), L) for v in (u, delta, B, C, dy))
  (dh0, dA), (du, dd, dB, dC) = jax.lax.scan(
      chunk, (dxT.astype(acc), jnp.zeros(A.shape, acc)), chunks + (x0s,), reverse=True)
  return (_from_chunks(du).astype(u.dtype), _from_chunks(dd).astype(delta.dtype),
          dA.astype(A.dtype), _from_chunks(dB).astype(B.dtype), _from_chunks(dC).astype(C.dtype),
          dh0.astype(h0.dtype))


_scan.defvjp(_scan_fwd, _scan_bwd)
