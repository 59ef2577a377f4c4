"""Training statistics sown by the layers into the "stats" collection: one float32 scalar per layer
and statistic, averaged over the batch and positions (padding included).

`sow` is a no-op unless the caller applies the model with mutable=["stats"] (training/step.py
does so only for the train.log_* flags that are on), so a statistic costs nothing when off: its
value is never used and XLA drops it. `init` never sows them (its variables are parameters,
caches and sown intermediates only). Under nn.scan each statistic gets the leading layer axis.
"""
from __future__ import annotations

import jax.numpy as jnp


def sow(module, name: str, value) -> None:
  if module.is_mutable_collection("stats") and not module.is_initializing():
    module.sow("stats", name, value.astype(jnp.float32))


def rms(x_BTD):
  """Root mean square of a hidden state over every element (Peri-LN's hidden-state scale)."""
  x = x_BTD.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(x * x))


def nonzero_fraction(h_BTF):
  """The fraction of non-zero activations (the Lazy Neuron paper's sparsity, 1 = dense)."""
  return jnp.mean((h_BTF != 0).astype(jnp.float32))
