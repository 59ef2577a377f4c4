"""Autoregressive sampling, with a KV cache (one token per step) or by full recomputation.

Both paths draw token i with the key fold_in(rng, i), so with the same logits they pick the same
tokens: tests use that to check the cache against the full forward pass.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

import modelzoo


def sample_logits(logits_BV, rng, temperature: float, top_k: int):
  if temperature <= 0.0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV.astype(jnp.float32) / temperature
  if top_k > 0:
    kth = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
  return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model_cfg", "max_new", "temperature", "top_k",
                                             "use_cache"))
def generate(params, prompt_BP, rng, *, model_cfg, max_new: int, temperature: float = 1.0,
             top_k: int = 0, use_cache: bool = True, logit_scale=1.0):
  """Returns the prompt followed by max_new sampled tokens, [B, P + max_new]."""
  B, P = prompt_BP.shape
  S = P + max_new
  buf_BS = jnp.zeros((B, S), jnp.int32).at[:, :P].set(prompt_BP)
  if not use_cache:
    model = modelzoo.build(model_cfg)

    def step(i, buf):
      logits = model.apply({"params": params}, buf, logit_scale=logit_scale)
      nxt = sample_logits(logits[:, P + i - 1], jax.random.fold_in(rng, i), temperature, top_k)
      return buf.at[:, P + i].set(nxt)
    return jax.lax.fori_loop(0, max_new, step, buf_BS)

  model = modelzoo.build(model_cfg, decode=True)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), buf_BS)["cache"])
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes))
  pos_BP = jnp.broadcast_to(jnp.arange(P), (B, P))
  logits, upd = model.apply({"params": params, "cache": cache}, prompt_BP, pos_BP,
                            logit_scale=logit_scale, mutable=["cache"])
  tok = sample_logits(logits[:, -1], jax.random.fold_in(rng, 0), temperature, top_k)
  buf_BS = buf_BS.at[:, P].set(tok)

  def step(i, carry):
    buf, cache = carry
    pos_B1 = jnp.full((B, 1), P + i - 1, jnp.int32)
    tok_B1 = jax.lax.dynamic_slice_in_dim(buf, P + i - 1, 1, axis=1)
    logits, upd = model.apply({"params": params, "cache": cache}, tok_B1, pos_B1,
                              logit_scale=logit_scale, mutable=["cache"])
    nxt = sample_logits(logits[:, -1], jax.random.fold_in(rng, i), temperature, top_k)
    return buf.at[:, P + i].set(nxt), upd["cache"]
  buf_BS, _ = jax.lax.fori_loop(1, max_new, step, (buf_BS, upd["cache"]))
  return buf_BS
