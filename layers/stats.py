"""Training statistics sown by the layers into the "stats" collection: one float32 scalar per layer
and statistic, averaged over the batch and positions (padding included).

`sow` is a no-op unless the caller applies the model with mutable=["stats"] (training/step.py
does so only for the train.log_* flags that are on), so a statistic costs nothing when off: its
value is never used and XLA drops it. `init` never sows them (its variables are parameters,
caches and sown intermediates only). Under nn.scan each statistic gets the leading layer axis.
"""
from __future__ import annotations

import jax.numpy as jnp


def wanted(module) -> bool:
  """Whether `module` is being applied with the statistics collected."""
  return module.is_mutable_collection("stats") and not module.is_initializing()


def sow(module, name: str, value) -> None:
  if wanted(module):
    module.sow("stats", name, value.astype(jnp.float32))


def rms(x_BTD):
  """Root mean square of a hidden state over every element (Peri-LN's hidden-state scale)."""
  x = x_BTD.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(x * x))


def entropy(p_BHTS):
  """Per head: the entropy (nats) of each query's attention weights, renormalised to sum to 1
  (softmax rows already do), averaged over batch and queries; a row with no weight counts 0.
  Collapse (Zhai et al. 2023) is entropy near 0: every query on one key."""
  p = p_BHTS.astype(jnp.float32)
  p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
  ent_BHT = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)
  return ent_BHT.mean((0, 2))


def max_abs(x):
  return jnp.max(jnp.abs(x.astype(jnp.float32)))


def kurtosis(x_BTD):
  """E[(x - mean)^4] / var^2 over the hidden units of each token, averaged over tokens (3 for a
  Gaussian; outlier dimensions make it large: the Quantizable Transformers paper's measure)."""
  x = x_BTD.astype(jnp.float32)
  d = x - x.mean(-1, keepdims=True)
  var = jnp.mean(d * d, -1)
  return jnp.mean(jnp.mean(d ** 4, -1) / jnp.maximum(var * var, 1e-30))


def nonzero_fraction(h_BTF):
  """The fraction of non-zero activations (the Lazy Neuron paper's sparsity, 1 = dense)."""
  return jnp.mean((h_BTF != 0).astype(jnp.float32))
