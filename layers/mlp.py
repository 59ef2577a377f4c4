"""Feed-forward blocks: GELU (GPT-2), SwiGLU (Llama), ReLU with optional Top-k (the Lazy Neuron
paper), and PolyCom's PolyReLU and PolyNorm (Zhuo et al. 2024).

  gelu, relu:  wo(act(wi x))                 swiglu:  wo(silu(wg x) * (wu x))
  polyrelu:    act(u) = a_3 relu(u)^3 + a_2 relu(u)^2 + a_1 relu(u) + b
  polynorm:    act(u) = a_3 N(u^3) + a_2 N(u^2) + a_1 N(u) + b,  N(v) = v / sqrt(mean_F(v^2) + eps)
               (the powers' RMS over the hidden units of each token)
  PolyCom's coefficients are learned scalars per layer, a_i = 1/3 and b = 0 at init.
  topk > 0 (relu only): each token keeps its k largest activations, the rest are zeroed.
The fraction of non-zero activations is sown as `act_nonzero` (layers/stats.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers import stats
from layers.dense import Dense
from layers.sharding import constrain, param

KINDS = ("gelu", "swiglu", "relu", "polyrelu", "polynorm")
POLY_ORDER = 3


def polycom(u_BTF, a_P, b, kind: str, eps: float = 1e-6):
  """PolyReLU / PolyNorm of order P = len(a_P): sum_i a_P[i] * term(u^(i+1)) + b, in float32."""
  u = u_BTF.astype(jnp.float32)
  if kind == "polyrelu":
    u = jax.nn.relu(u)
  out = b
  for i in range(a_P.shape[0]):
    v = u ** (i + 1)
    if kind == "polynorm":
      v = v * jax.lax.rsqrt(jnp.mean(v * v, -1, keepdims=True) + eps)
    out = out + a_P[i] * v
  return out.astype(u_BTF.dtype)


def top_k_mask(h_BTF, k: int):
  """h with all but each row's k largest entries set to zero (ties at the k-th kept)."""
  kth_BT1 = jax.lax.top_k(h_BTF, k)[0][..., -1:]
  return jnp.where(h_BTF >= kth_BT1, h_BTF, jnp.zeros_like(h_BTF))


class MLP(nn.Module):
  d_ff: int
  kind: str = "gelu"            # KINDS
  gelu_exact: bool = False
  topk: int = 0                 # relu only: keep each token's k largest activations; 0 = all
  use_bias: bool = True
  init_std: float = 0.02
  out_std: float = 0.02         # GPT-2 scales the residual-output init by 1/sqrt(2L)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  matmul_dtype: jnp.dtype | None = None   # of the projections' operands (layers.dense)
  sigma_reparam: bool = False   # σReparam on wi and wo (layers/sigma_reparam.py)

  @nn.compact
  def __call__(self, x_BTD):
    D = x_BTD.shape[-1]
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
              matmul_dtype=self.matmul_dtype, sigma_reparam=self.sigma_reparam)
    if self.kind == "swiglu":
      # gate and up projections in one matmul; the (2, F) split keeps each tensor shard's gate and
      # up units together, so no communication is needed to pair them.
      h_BT2F = Dense((2, self.d_ff), ("embed", None, "mlp"), init_std=self.init_std, name="wi",
                     **kw)(x_BTD)
      h_BTF = jax.nn.silu(h_BT2F[..., 0, :]) * h_BT2F[..., 1, :]
    else:
      h_BTF = Dense((self.d_ff,), ("embed", "mlp"), init_std=self.init_std, name="wi", **kw)(x_BTD)
      if self.kind == "gelu":
        h_BTF = jax.nn.gelu(h_BTF, approximate=not self.gelu_exact)
      elif self.kind == "relu":
        h_BTF = jax.nn.relu(h_BTF)
        if self.topk:
          h_BTF = top_k_mask(h_BTF, self.topk)
      else:
        a_P = self.param("poly_a", param(nn.initializers.constant(1.0 / POLY_ORDER), ("norm",)),
                         (POLY_ORDER,), jnp.float32)
        b = self.param("poly_b", param(nn.initializers.zeros, ()), (), jnp.float32)
        h_BTF = polycom(h_BTF, a_P, b, self.kind)
    if stats.wanted(self):
      stats.sow(self, "act_nonzero", stats.nonzero_fraction(h_BTF))
    h_BTF = constrain(h_BTF, ("batch", "length", "act_mlp"))
    return Dense((D,), ("mlp", "embed"), init_std=self.out_std, name="wo", **kw)(h_BTF)
