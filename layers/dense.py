"""A dense layer over several input and output axes, with logical axis names on every kernel dim.

    y[..., *out] = sum over in-axes of x[..., *in] * W[*in, *out] (+ b[*out])

(flax's DenseGeneral initialises a flattened 2-D kernel, which breaks multi-axis logical constraints.)
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers import sigma_reparam
from layers.sharding import param


def _t(a_MN):
  """a.T, materialised on CPU. XLA:CPU folds a plain transpose into the dot as a transposed
  operand, which YNNPACK does not take: the dot then runs in Eigen, upcast to float32 (~4x slower
  in bfloat16 here). A transpose through a unit axis is copied before the dot instead."""
  if jax.default_backend() != "cpu":
    return a_MN.T
  M, N = a_MN.shape
  return a_MN.reshape(M, N, 1).transpose(1, 2, 0).reshape(N, M)


def mixed_matmul(x_MK, w, dtype, w_is_NK: bool = False):
  """x @ w (or x @ w.T if w_is_NK) with both operands rounded to `dtype` (e.g. bfloat16) and
  accumulated in float32.

  Returns float32. The gradients are float32-accumulated too and come back in the primal dtypes
  (a float32 weight gets a float32 gradient, never rounded to bfloat16). XLA:CPU runs bfloat16
  dots with a float32 result on the AMX/AVX512-BF16 units; with a bfloat16 result it upcasts them.
  Every dot here, forward and backward, is a plain (M,K)@(K,N) on materialised operands: a bfloat16
  dot that XLA:CPU leaves to Eigen fails at run time ("Unsupported element type for DotThunk")."""
  return _mixed(x_MK, w, jnp.dtype(dtype), x_MK.dtype, w_is_NK)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _mixed(x_MK, w, dtype, x_dtype, w_is_NK):
  w_KN = _t(w.astype(dtype)) if w_is_NK else w.astype(dtype)
  return jnp.matmul(x_MK.astype(dtype), w_KN, preferred_element_type=jnp.float32)


def _mixed_fwd(x_MK, w, dtype, x_dtype, w_is_NK):
  x_lo = x_MK.astype(dtype)  # saved for the backward in low precision: half the memory
  return _mixed(x_lo, w, dtype, x_dtype, w_is_NK), (x_lo, w)


def _mixed_bwd(dtype, x_dtype, w_is_NK, res, dy_MN):
  x_lo, w = res
  dy_MN, w_lo = dy_MN.astype(dtype), w.astype(dtype)
  f32 = dict(preferred_element_type=jnp.float32)
  if w_is_NK:    # y = x w^T: dx = dy w, dw = dy^T x
    dx_MK, dw = jnp.matmul(dy_MN, w_lo, **f32), jnp.matmul(_t(dy_MN), x_lo, **f32)
  else:          # y = x w: dx = dy w^T, dw = x^T dy
    dx_MK, dw = jnp.matmul(dy_MN, _t(w_lo), **f32), jnp.matmul(_t(x_lo), dy_MN, **f32)
  return dx_MK.astype(x_dtype), dw.astype(w.dtype)


_mixed.defvjp(_mixed_fwd, _mixed_bwd)


class Dense(nn.Module):
  out_shape: tuple
  names: tuple                  # logical names of the kernel's dims: in-axes then out-axes
  n_in: int = 1                 # how many trailing axes of x are contracted
  use_bias: bool = True
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32            # of the output (and of x before the matmul)
  param_dtype: jnp.dtype = jnp.float32
  matmul_dtype: jnp.dtype | None = None     # of the matmul's operands; None: dtype
  sigma_reparam: bool = False   # W_hat = gamma / sigma(W) * W (layers/sigma_reparam.py)

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
    x_MK, w_KN = x.astype(self.dtype).reshape(-1, fan_in), w.reshape(fan_in, -1)
    if self.sigma_reparam:
      w_KN = self.reparam(w_KN, shape)
    mm = jnp.dtype(self.matmul_dtype or self.dtype)
    if mm == jnp.float32:
      y = (x_MK @ w_KN.astype(jnp.float32)).astype(self.dtype)
    else:   # low-precision operands, float32 accumulation
      y = mixed_matmul(x_MK, w_KN, mm).astype(self.dtype)
    y = y.reshape(lead + tuple(self.out_shape))
    if self.use_bias:
      b = self.param("bias", param(nn.initializers.zeros, self.names[self.n_in:]),
                     tuple(self.out_shape), self.param_dtype)
      y = y + b.astype(self.dtype)
    return y

  def reparam(self, w_KN, shape):
    """gamma / sigma(W) * W, with u, v in their own collection (not trained; the train step's
    power iteration updates them)."""
    n_in, (u0, v0) = self.n_in, (None, None)
    if self.is_initializing():
      u0, v0 = sigma_reparam.init_uv(w_KN)
    u = self.variable(sigma_reparam.COLLECTION, "u", param(lambda: u0.reshape(shape[:n_in]),
                                                           self.names[:n_in]))
    v = self.variable(sigma_reparam.COLLECTION, "v", param(lambda: v0.reshape(shape[n_in:]),
                                                           self.names[n_in:]))
    gamma = self.param(sigma_reparam.GAMMA, param(nn.initializers.ones, ()), (), jnp.float32)
    return sigma_reparam.reparam(w_KN, u.value.reshape(-1), v.value.reshape(-1), gamma)
