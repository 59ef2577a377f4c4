"""Decoder-only LM covering GPT-2 style and Llama style, and sigmoid attention with its stabilisers
(QK-norm, LayerScale, hybrid-norm), chosen by config fields.

Model FLOPs per training token, the codebase's convention (nanoGPT / PaLM appendix B): 6N (forward
2N, backward 4N; N the parameters that take part in matmuls, not the lookup tables) plus attention
12·L·H·d_head·T, the full T×T score and value matmuls: causal attention is NOT halved.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from configs.base import ConfigError
from layers.block import Block, stack
from modelzoo import common


def block(m, decode: bool = False):
  """One decoder layer: attention and MLP, the norm placement and stabilisers from the config."""
  return functools.partial(
      Block, mixer=common.attention(m, decode), mlp=common.mlp(m), norm=common.norm(m),
      mixer_name="attn", placement=m.norm_placement, hybrid_norm=m.hybrid_norm,
      layer_scale=m.layer_scale, param_dtype=jnp.dtype(m.param_dtype))


class DecoderLM(nn.Module):
  cfg: object                   # the model config
  decode: bool = False

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    m = self.cfg
    layers = stack([block(m, self.decode)] * m.n_layers, scan=m.scan_layers, remat=m.remat)
    return common.language_model(
        m, tokens_BT, positions_BT, lambda x, pos: layers(x, pos, segment_ids_BT, logit_scale),
        final_norm=m.norm_placement == "pre")     # post-norm blocks end normalised


# ---------------------------------------------------------------------------------------------
# Registry hooks.

def check_config(m) -> None:
  if (m.hybrid_norm or m.layer_scale) and m.norm_placement != "pre":
    raise ConfigError("model.hybrid_norm and model.layer_scale need model.norm_placement=pre")


def flops_per_token(m, n_params: int, seq_len: int) -> float:
  return common.flops_per_token(m, n_params, kernel_flops_per_token(m, seq_len))


def kernel_flops_per_token(m, seq_len: int) -> float:
  """The attention kernel's part: 12·L·H·d_head·T (scores and values, fwd + bwd)."""
  return 12.0 * m.n_layers * m.n_heads * common.d_head(m) * seq_len
