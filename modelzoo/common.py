"""Config -> layers translations shared by several families (the layers themselves know no config).

Each function reads a model config and returns plain values or a layer factory
(`functools.partial(Module, **fields)`, see layers/block.py).
"""
from __future__ import annotations

import functools
import math

import jax.numpy as jnp

from layers.attention import Attention
from layers.dense import Dense
from layers.embed import Embed
from layers.mlp import MLP
from layers.norm import Norm
from layers.sharding import constrain


def d_head(m) -> int:
  return m.d_head or m.d_model // m.n_heads


def n_kv_heads(m) -> int:
  return m.n_kv_heads or m.n_heads


def dtypes(m) -> dict:
  return dict(dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype))


def matmul_dtypes(m) -> dict:
  """dtypes() and model.matmul_dtype ("" = dtype), for the layers that honour it."""
  return dict(dtypes(m), matmul_dtype=jnp.dtype(m.matmul_dtype or m.dtype))


def out_std(m) -> float:
  """GPT-2's scaled init for projections that write to the residual stream."""
  return m.init_std / math.sqrt(2 * m.n_layers)


def norm(m, groups: int = 1):
  return functools.partial(Norm, kind=m.norm, use_bias=m.norm_bias, eps=m.norm_eps, groups=groups,
                           param_dtype=jnp.dtype(m.param_dtype))


def attention(m, decode: bool, window: int | None = None):
  """The decoder's attention layer (GQA, RoPE, sigmoid or softmax, QK-norm): also the attention
  layers of the DeltaNet and Mamba-2 hybrids."""
  return functools.partial(
      Attention, n_heads=m.n_heads, n_kv_heads=n_kv_heads(m), d_head=d_head(m), kind=m.attention,
      sigmoid_bias=-math.log(m.max_len), rope_theta=m.rope_theta if m.pos == "rope" else None,
      use_bias=m.use_bias, impl=m.attn_impl, qk_norm=m.norm if m.qk_norm else "none",
      qk_norm_eps=m.norm_eps, window=window, init_std=m.init_std, out_std=out_std(m),
      decode=decode, **matmul_dtypes(m))


def mlp(m):
  return functools.partial(MLP, m.d_ff, kind=m.mlp, gelu_exact=m.gelu_exact, use_bias=m.use_bias,
                           init_std=m.init_std, out_std=out_std(m), **matmul_dtypes(m))


def language_model(m, tokens_BT, positions_BT, body, final_norm: bool = True):
  """Embedding (+ learned positions) -> body(x, positions) -> final norm -> (tied) head. Called
  from a compact method, so the modules made here belong to the calling model."""
  if positions_BT is None:
    positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
  embed = Embed(m.vocab_size, m.d_model, m.init_std, name="embed", **matmul_dtypes(m))
  x_BTD = embed(tokens_BT)
  if m.pos == "learned":
    x_BTD = x_BTD + Embed(m.max_len, m.d_model, m.init_std, names=(None, "embed"), name="pos",
                          **dtypes(m))(positions_BT)
  x_BTD = body(constrain(x_BTD, ("batch", "length", "act_embed")), positions_BT)
  if final_norm:
    x_BTD = norm(m)(name="norm_f")(x_BTD)
  if m.tie_embeddings:
    logits_BTV = embed.attend(x_BTD)
  else:
    logits_BTV = Dense((m.vocab_size,), ("embed", "vocab"), use_bias=False, init_std=m.init_std,
                       name="head", **matmul_dtypes(m))(x_BTD)
  return constrain(logits_BTV, ("batch", "length", "act_vocab"))


def flops_per_token(m, n_params: int, kernel_flops: float) -> float:
  """6N + the kernels' part, N without the parameters that are only looked up, never multiplied
  (the untied input table, the learned position table): nanoGPT/PaLM's convention."""
  lookups = (0 if m.tie_embeddings else m.vocab_size * m.d_model) + (
      m.max_len * m.d_model if m.pos == "learned" else 0)
  return 6.0 * (n_params - lookups) + kernel_flops
