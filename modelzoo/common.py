"""Config -> layers translations shared by several families (the layers themselves know no config).

Each function reads a model config and returns plain values or a layer factory
(`functools.partial(Module, **fields)`, see layers/block.py).
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax.numpy as jnp

from layers.attention import Attention
from layers.dense import Dense
from layers.embed import Embed
from layers.mlp import MLP
from layers.norm import Norm
from layers.sharding import constrain
from layers.sigma_reparam import COLLECTION as SIGMA_REPARAM

# Variable collections that are model state but not trained (TrainState.buffers): the train step
# updates them itself, checkpoints carry them.
BUFFERS = (SIGMA_REPARAM,)


def buffers(variables: dict) -> dict:
  """The BUFFERS collections of a model's variables ({} for most models)."""
  return {k: variables[k] for k in BUFFERS if k in variables}


def dtypes(m) -> dict:
  return dict(dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype))


def matmul_dtypes(m) -> dict:
  """dtypes() and the matmuls' operand dtype (the decoder's model.matmul_dtype), for the layers
  that take it."""
  return dict(dtypes(m), matmul_dtype=jnp.dtype(m.dot_dtype))


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
      Attention, n_heads=m.n_heads, n_kv_heads=m.kv_heads, d_head=m.head_dim, kind=m.attention,
      sigmoid_bias=-math.log(m.max_len) if m.sigmoid_bias else 0.0,
      rope_theta=m.rope_theta if m.pos == "rope" else None,
      use_bias=m.use_bias, impl=m.attn_impl, qk_norm=m.norm if m.qk_norm else "none",
      qk_norm_eps=m.norm_eps, window=window, init_std=m.init_std, out_std=out_std(m),
      clip=(m.attn_clip_zeta, m.attn_clip_gamma) if m.clipped else None, gate=m.attn_gate,
      decode=decode, **matmul_dtypes(m))


def mlp(m):
  return functools.partial(MLP, m.d_ff, kind=m.mlp, gelu_exact=m.gelu_exact, topk=m.mlp_topk,
                           use_bias=m.use_bias, init_std=m.init_std, out_std=out_std(m),
                           **matmul_dtypes(m))


class LM(nn.Module):
  """Embedding (+ learned positions) -> the layers -> final norm -> (tied) head: the frame of every
  family but the Dual-Stream model. A family defines layers() (and may define final_norm())."""
  cfg: object                   # the family's config (modelzoo/<family>/config.py)
  decode: bool = False

  @nn.nowrap
  def layers(self):
    """The layer stack, made inside __call__ (its modules belong to this model): a callable
    (x_BTD, positions_BT, segment_ids_BT, logit_scale) -> x_BTD."""
    raise NotImplementedError

  def final_norm(self) -> bool:
    return True

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    """tokens_BT: token ids [B, T] -> logits [B, T, V]; with model.d_in > 0 real-valued rows
    [B, T, d_in] -> the scalar read-out y_hat [B, T] (in-context regression, data/tasks.py)."""
    m = self.cfg
    B, T = tokens_BT.shape[:2]
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(T), (B, T))
    if m.d_in:    # a linear read-in in place of the table (Garg et al.'s transformer)
      x_BTD = Dense((m.d_stream,), (None, "embed"), init_std=m.init_std, name="read_in",
                    **matmul_dtypes(m))(tokens_BT)
    else:
      embed = Embed(m.vocab_size, m.d_stream, m.init_std, name="embed", **matmul_dtypes(m))
      x_BTD = embed(tokens_BT)
    if m.pos == "learned":
      x_BTD = x_BTD + Embed(m.max_len, m.d_stream, m.init_std, names=(None, "embed"), name="pos",
                            **dtypes(m))(positions_BT)
    x_BTD = constrain(x_BTD, ("batch", "length", "act_embed"))
    x_BTD = self.layers()(x_BTD, positions_BT, segment_ids_BT, logit_scale)
    if self.final_norm():
      x_BTD = norm(m)(name="norm_f")(x_BTD)
    if m.d_in:
      y_BT1 = Dense((1,), ("embed", None), init_std=m.init_std, name="read_out",
                    **matmul_dtypes(m))(x_BTD)
      return constrain(y_BT1[..., 0].astype(jnp.float32), ("batch", "length"))
    if m.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      logits_BTV = Dense((m.vocab_size,), ("embed", "vocab"), use_bias=m.head_bias,
                         init_std=m.init_std, name="head", **matmul_dtypes(m))(x_BTD)
    return constrain(logits_BTV, ("batch", "length", "act_vocab"))


def flops_per_token(m, n_params: int, kernel_flops: float) -> float:
  """6N + the kernels' part, N without the parameters that are only looked up, never multiplied
  (the untied input table, the learned position table): nanoGPT/PaLM's convention."""
  lookups = (0 if m.tie_embeddings or m.d_in else m.vocab_size * m.d_stream) + (
      m.max_len * m.d_stream if m.pos == "learned" else 0)
  return 6.0 * (n_params - lookups) + kernel_flops


def dummy_inputs(m, seq_len: int):
  """A batch of one zero example as the model reads it, to initialise or trace the parameters:
  token ids int32 [1, T], or real-valued rows float32 [1, T, d_in] (model.d_in > 0)."""
  if m.d_in:
    return jnp.zeros((1, seq_len, m.d_in), jnp.float32)
  return jnp.zeros((1, seq_len), jnp.int32)
