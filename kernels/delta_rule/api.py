"""delta_rule: the chunked (gated) delta rule, DeltaNet / Gated DeltaNet's sequence mixer."""
from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from kernels import _dispatch
from kernels.delta_rule import pallas_gpu, pallas_tpu, reference

CHUNK_SIZES = (16, 32, 64)
_BACKENDS = {"tpu": pallas_tpu, "gpu": pallas_gpu}


def delta_rule(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH=None, *, initial_state_BHKV=None,
               scale=None, chunk_size=64, impl="auto"):
  """(Gated) delta rule over a sequence; returns (o_BTHV, final_state_BHKV).

  Per (batch, head), with state S (K x V) starting at initial_state_BHKV (zeros by default):
    S_t = exp(g_t) S_{t-1}     (only when g_BTH is given: the gated delta rule)
    u_t = beta_t (v_t - S_t^T k_t);   S_t += k_t u_t^T;   o_t = S_t^T (scale q_t)
  g_t <= 0 is a log-decay; beta_t in [0, 1] (up to 2 keeps it stable) is the write strength.
  q and k should be L2-normalised by the caller (the model does it; the kernel does not): with
  unnormalised keys the recurrence can diverge.

  scale: a static float, default K ** -0.5.  chunk_size: 16, 32 or 64.
  impl: "auto" | "xla" | "pallas" | "interpret", see kernels/_dispatch.py.
  T need not be a multiple of chunk_size: the tail is padded with beta = 0, k = 0, g = 0 tokens,
  which leave the state unchanged, and their outputs are dropped.
  Math is accumulated in promote_types(dtype, float32) (so float64 works); o has v's dtype and
  the final state the accumulation dtype, ready to be passed back as initial_state_BHKV (running
  two halves of a sequence with the state passed through equals one run).
  Gradients flow to q, k, v, beta, g and initial_state.
  """
  scale = _validate(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, initial_state_BHKV, scale, chunk_size)
  g_BTH, s0_BHKV, scale, acc = reference.fill_defaults(q_BTHK, v_BTHV, g_BTH, initial_state_BHKV,
                                                       scale)
  fn = _dispatch.select(
      impl,
      xla=functools.partial(reference.delta_rule_chunked, scale=scale, chunk_size=chunk_size),
      tpu=functools.partial(pallas_chunked, "tpu", scale, chunk_size),
      gpu=functools.partial(pallas_chunked, "gpu", scale, chunk_size))
  return fn(q_BTHK, k_BTHK, v_BTHV, beta_BTH.astype(acc), g_BTH.astype(acc), s0_BHKV)


def _validate(q, k, v, beta, g, s0, scale, chunk_size) -> float:
  for name, x, nd in (("q_BTHK", q, 4), ("k_BTHK", k, 4), ("v_BTHV", v, 4), ("beta_BTH", beta, 3),
                      ("g_BTH", g, 3), ("initial_state_BHKV", s0, 4)):
    if x is None:
      continue
    if x.ndim != nd:
      raise ValueError(f"{name} must have {nd} dims, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
  B, T, H, K = q.shape
  if k.shape != q.shape:
    raise ValueError(f"k_BTHK shape {k.shape} != q_BTHK shape {q.shape}")
  if v.shape[:3] != (B, T, H):
    raise ValueError(f"v_BTHV shape {v.shape} does not match (B, T, H) = {(B, T, H)}")
  if q.dtype != k.dtype or q.dtype != v.dtype:
    raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
  for name, x in (("beta_BTH", beta), ("g_BTH", g)):
    if x is not None and x.shape != (B, T, H):
      raise ValueError(f"{name} shape {x.shape} != (B, T, H) = {(B, T, H)}")
  if s0 is not None and s0.shape != (B, H, K, v.shape[-1]):
    raise ValueError(f"initial_state_BHKV shape {s0.shape} != (B, H, K, V) = "
                     f"{(B, H, K, v.shape[-1])}")
  if min(T, K, v.shape[-1]) < 1:
    raise ValueError(f"empty input: T={T}, K={K}, V={v.shape[-1]}")
  if chunk_size not in CHUNK_SIZES:
    raise ValueError(f"chunk_size={chunk_size!r} is not one of {CHUNK_SIZES}")
  if scale is None:
    return K ** -0.5
  if not isinstance(scale, numbers.Real) or not 0 < float(scale) < float("inf"):
    raise ValueError(f"scale={scale!r} must be a positive finite Python number (it is static)")
  return float(scale)


# ------------------------------------------------------------------------------------------------
# Pallas path: chunk layout in jnp (differentiated by autodiff), kernels behind one custom_vjp.


def pallas_chunked(backend, scale, chunk_size, q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, s0_BHKV, *,
            interpret):
  T, C = q_BTHK.shape[1], chunk_size
  q, k, v, beta = (reference.to_chunks(x, C) for x in (q_BTHK, k_BTHK, v_BTHV, beta_BTH))
  # the within-chunk cumsum stays out of the kernels (TPU Pallas cannot lower cumsum); its VJP,
  # a reverse cumsum, comes from autodiff.
  gc = jnp.cumsum(reference.to_chunks(g_BTH, C), axis=-1)
  o, sT_BHKV = _chunked(backend, scale, interpret, q, k, v, beta, gc, s0_BHKV)
  return reference.from_chunks(o, T), sT_BHKV


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _chunked(backend, scale, interpret, q, k, v, beta, gc, s0):
  return _chunked_fwd(backend, scale, interpret, q, k, v, beta, gc, s0)[0]


def _chunked_fwd(backend, scale, interpret, q, k, v, beta, gc, s0):
  be = _BACKENDS[backend]
  x = be.wy_inverse(k, beta, gc, interpret=interpret)
  o, _, sT = be.forward(q, k, v, beta, gc, x, s0, scale=scale, interpret=interpret)
  # Residuals: the inputs and X = ((I+A)^-1)^T (as FLA); the per-chunk states h are recomputed.
  return (o, sT), (q, k, v, beta, gc, s0, x)


def _chunked_bwd(backend, scale, interpret, res, cts):
  q, k, v, beta, gc, s0, x = res
  do, dsT = cts
  be = _BACKENDS[backend]
  _, h, _ = be.forward(q, k, v, beta, gc, x, s0, scale=scale, interpret=interpret)
  grads = be.backward(q, k, v, beta, gc, x, h, do, dsT, scale=scale, interpret=interpret)
  return tuple(d.astype(p.dtype) for d, p in zip(grads, (q, k, v, beta, gc, s0)))


_chunked.defvjp(_chunked_fwd, _chunked_bwd)
