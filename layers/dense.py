"""A dense layer over several input and output axes, with logical axis names on every kernel dim.

    y[..., *out] = sum over in-axes of x[..., *in] * W[*in, *out] (+ b[*out])

(flax's DenseGeneral initialises a flattened 2-D kernel, which breaks multi-axis logical constraints.)
"""
from __future__ import annotations

import math

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
    # One 2-D matmul, not an N-D tensordot: for the N-D form XLA:CPU's backward picks transposed
    # operand layouts that its fast dot library rejects (docs/shakespeare_char.md); reshapes that
    # merge leading axes keep their sharding.
    lead, fan_in = x.shape[:x.ndim - self.n_in], math.prod(shape[:self.n_in])
    y = x.astype(self.dtype).reshape(-1, fan_in) @ w.astype(self.dtype).reshape(fan_in, -1)
    y = y.reshape(lead + tuple(self.out_shape))
    if self.use_bias:
      b = self.param("bias", param(nn.initializers.zeros, self.names[self.n_in:]),
                     tuple(self.out_shape), self.param_dtype)
      y = y + b.astype(self.dtype)
    return y
