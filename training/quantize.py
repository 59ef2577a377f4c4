"""W8A8 fake quantization for evaluation (eval.py --quant w8a8), the Quantizable Transformers
paper's measure of how much outliers cost: the loss increase when weights and activations are
rounded to 8-bit integers.

Symmetric uniform quantization, per tensor: q(x) = clip(round(x / s), -127, 127) * s with
s = max|x| / 127, so a single outlier coarsens every other value of its tensor.
- Weights: every matmul weight (each Dense "kernel" and the "embedding" table, also the tied
  head), once, before evaluation (s from the whole tensor).
- Activations: the input of every Dense (layers/dense.py), per batch (s = that batch's max|x|:
  dynamic ranges, not calibrated ones). The attention kernel's internal products (q.k, p.v) and
  the non-matmul layers stay in float.
"""
from __future__ import annotations

import flax
import flax.linen as nn
import jax.numpy as jnp

from layers.dense import Dense

WEIGHTS = ("kernel", "embedding")
MODES = ("w8a8",)


def fake_quant(x, bits: int = 8):
  """x rounded to a symmetric `bits`-bit grid spanning max|x| (float in, float out)."""
  top = 2 ** (bits - 1) - 1
  s = jnp.max(jnp.abs(x)).astype(jnp.float32) / top
  s = jnp.where(s > 0, s, 1.0)
  return (jnp.clip(jnp.round(x.astype(jnp.float32) / s), -top, top) * s).astype(x.dtype)


def quantize_weights(params):
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: fake_quant(v) if k[-1] in WEIGHTS else v for k, v in flat.items()})


def _quantize_dense_inputs(next_fun, args, kwargs, context):
  if isinstance(context.module, Dense) and context.method_name == "__call__":
    args = (fake_quant(args[0]),) + tuple(args[1:])
  return next_fun(*args, **kwargs)


def activations():
  """Inside this context, every Dense traced rounds its input to 8 bits first."""
  return nn.intercept_methods(_quantize_dense_inputs)


def eval_fn(eval_step, mode: str | None):
  """eval_step(params, batch) with `mode` applied (None: as is), to jit."""
  if mode is None:
    return eval_step

  def quantized(params, batch):
    with activations():
      return eval_step(quantize_weights(params), batch)
  return quantized

