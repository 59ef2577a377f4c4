"""A dense layer over several input and output axes, with logical axis names on every kernel dim.

    y[..., *out] = sum over in-axes of x[..., *in] * W[*in, *out] (+ b[*out])

(flax's DenseGeneral initialises a flattened 2-D kernel, which breaks multi-axis logical constraints.)
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from layers.sharding import param


class Dense(nn.Module):
  out_shape: tuple
  names: tuple                  # logical names of the kernel's dims: in-axes then out-axes
  n_in: int = 1                 # how many trailing axes of x are contracted
  use_bias: bool = True
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = x.shape[x.ndim - self.n_in:] + tuple(self.out_shape)
    assert len(self.names) == len(shape), (self.names, shape)
    w = self.param("kernel", param(nn.initializers.normal(self.init_std), self.names), shape,
                   self.param_dtype)
    y = jnp.tensordot(x.astype(self.dtype), w.astype(self.dtype), axes=self.n_in)
    if self.use_bias:
      b = self.param("bias", param(nn.initializers.zeros, self.names[self.n_in:]),
                     tuple(self.out_shape), self.param_dtype)
      y = y + b.astype(self.dtype)
    return y
