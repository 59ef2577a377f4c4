"""LayerNorm and RMSNorm, computed in float32 whatever the activation dtype.

`groups > 1` normalises each of `groups` equal slices of the feature axis separately: with
groups = n_heads this is the Dual-Stream paper's channel-wise LayerNorm (CLN), one LN per head.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from layers.sharding import param


class Norm(nn.Module):
  kind: str = "layernorm"       # layernorm | rmsnorm
  use_bias: bool = True         # layernorm only
  eps: float = 1e-5
  groups: int = 1
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD):
    D = x_BTD.shape[-1]
    x = x_BTD.astype(jnp.float32).reshape(*x_BTD.shape[:-1], self.groups, D // self.groups)
    if self.kind == "layernorm":
      x = x - x.mean(-1, keepdims=True)
    x = x * jnp.reciprocal(jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + self.eps))
    x = x.reshape(x_BTD.shape)
    scale = self.param("scale", param(nn.initializers.ones, ("norm",)), (D,), self.param_dtype)
    x = x * scale
    if self.kind == "layernorm" and self.use_bias:
      x = x + self.param("bias", param(nn.initializers.zeros, ("norm",)), (D,), self.param_dtype)
    return x.astype(x_BTD.dtype)
