"""LayerNorm, RMSNorm and CRMSNorm, computed in float32 whatever the activation dtype.

CRMSNorm (Jiang et al. 2023, Pre-CRMSNorm) normalises a zero-mean vector of width d stored
compressed as its first d - 1 coordinates x (the last is -sum(x)): its RMS over d is
sqrt((sum(x^2) + sum(x)^2) / d). So the input has D = d - 1 features (interop/norm_convert.py).

`groups > 1` normalises each of `groups` equal slices of the feature axis separately: with
groups = n_heads this is the Dual-Stream paper's channel-wise LayerNorm (CLN), one LN per head.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from layers.sharding import param


class Norm(nn.Module):
  kind: str = "layernorm"       # layernorm | rmsnorm | crmsnorm
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
    if self.kind == "crmsnorm":
      sum_sq = jnp.sum(x * x, -1, keepdims=True) + jnp.sum(x, -1, keepdims=True) ** 2
      ms = sum_sq / (x.shape[-1] + 1)     # the dropped coordinate is -sum(x)
    else:
      ms = jnp.mean(x * x, -1, keepdims=True)
    x = x * jnp.reciprocal(jnp.sqrt(ms + self.eps))
    x = x.reshape(x_BTD.shape)
    scale = self.param("scale", param(nn.initializers.ones, ("norm",)), (D,), self.param_dtype)
    x = x * scale
    if self.kind == "layernorm" and self.use_bias:
      x = x + self.param("bias", param(nn.initializers.zeros, ("norm",)), (D,), self.param_dtype)
    return x.astype(x_BTD.dtype)
