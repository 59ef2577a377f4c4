"""Feed-forward blocks: GELU (GPT-2) and SwiGLU (Llama)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers.dense import Dense
from layers.sharding import constrain


class MLP(nn.Module):
  d_ff: int
  kind: str = "gelu"            # gelu | swiglu
  gelu_exact: bool = False
  use_bias: bool = True
  init_std: float = 0.02
  out_std: float = 0.02         # GPT-2 scales the residual-output init by 1/sqrt(2L)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  matmul_dtype: jnp.dtype | None = None   # of the projections' operands (layers.dense)

  @nn.compact
  def __call__(self, x_BTD):
    D = x_BTD.shape[-1]
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
              matmul_dtype=self.matmul_dtype)
    if self.kind == "swiglu":
      # gate and up projections in one matmul; the (2, F) split keeps each tensor shard's gate and
      # up units together, so no communication is needed to pair them.
      h_BT2F = Dense((2, self.d_ff), ("embed", None, "mlp"), init_std=self.init_std, name="wi",
                     **kw)(x_BTD)
      h_BTF = jax.nn.silu(h_BT2F[..., 0, :]) * h_BT2F[..., 1, :]
    else:
      h_BTF = Dense((self.d_ff,), ("embed", "mlp"), init_std=self.init_std, name="wi", **kw)(x_BTD)
      h_BTF = jax.nn.gelu(h_BTF, approximate=not self.gelu_exact)
    h_BTF = constrain(h_BTF, ("batch", "length", "act_mlp"))
    return Dense((D,), ("mlp", "embed"), init_std=self.out_std, name="wo", **kw)(h_BTF)
