"""Token embeddings (tied or not), learned positions and rotary position embeddings."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from layers.dense import mixed_matmul
from layers.sharding import param


class Embed(nn.Module):
  """A table looked up by id: token embeddings (vocab_size = V), or learned positions (V = the
  table's length, names (None, "embed"))."""
  vocab_size: int
  d_model: int
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  matmul_dtype: jnp.dtype | None = None   # of the tied head's operands (layers.dense)
  names: tuple = ("vocab", "embed")

  def setup(self):
    self.table_VD = self.param("embedding", param(nn.initializers.normal(self.init_std),
                                                  self.names),
                               (self.vocab_size, self.d_model), self.param_dtype)

  def __call__(self, tokens_BT):
    return jnp.take(self.table_VD, tokens_BT, axis=0).astype(self.dtype)

  def attend(self, x_BTD):
    """Tied output head: logits against the embedding table."""
    mm = jnp.dtype(self.matmul_dtype or self.dtype)
    if mm == jnp.float32:
      return jnp.einsum("btd,vd->btv", x_BTD, self.table_VD.astype(self.dtype))
    B, T, D = x_BTD.shape
    logits_MV = mixed_matmul(x_BTD.reshape(B * T, D), self.table_VD, mm, w_is_NK=True)
    return logits_MV.reshape(B, T, -1).astype(self.dtype)


def rope(x_BTHD, positions_BT, theta: float = 10000.0):
  """Rotary embedding, rotating pairs (i, i + D/2) (the GPT-NeoX / Llama-HF layout)."""
  D = x_BTHD.shape[-1]
  inv_freq = theta ** (-jnp.arange(0, D, 2, dtype=jnp.float32) / D)
  ang_BTF = positions_BT.astype(jnp.float32)[..., None] * inv_freq
  cos, sin = jnp.cos(ang_BTF)[:, :, None, :], jnp.sin(ang_BTF)[:, :, None, :]
  x1, x2 = jnp.split(x_BTHD.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTHD.dtype)
