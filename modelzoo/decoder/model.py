"""Decoder-only LM covering GPT-2 style and Llama style, and sigmoid attention with its stabilisers
(QK-norm, LayerScale, hybrid-norm = norm_placement=peri) and the norm placements pre, post and
peri (Peri-LN), chosen by config fields.

Model FLOPs per training token, the codebase's convention (nanoGPT / PaLM appendix B): 6N (forward
2N, backward 4N; N the parameters that take part in matmuls, not the lookup tables) plus attention
12·L·H·d_head·T, the full T×T score and value matmuls: causal attention is NOT halved.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from layers.block import Block, stack
from modelzoo import common


def block(m, decode: bool = False):
  """One decoder layer: attention and MLP, the norm placement and stabilisers from the config."""
  return functools.partial(
      Block, mixer=functools.partial(common.attention(m, decode), sigma_reparam=m.sigma_reparam),
      mlp=functools.partial(common.mlp(m), sigma_reparam=m.sigma_reparam), norm=common.norm(m),
      mixer_name="attn", placement=m.norm_placement, layer_scale=m.layer_scale, param_dtype=jnp.dtype(m.param_dtype))


class DecoderLM(common.LM):
  """cfg: DecoderConfig (modelzoo/decoder/config.py)."""

  @nn.nowrap
  def layers(self):
    m = self.cfg
    return stack([block(m, self.decode)] * m.n_layers, scan=m.scan_layers, remat=m.remat)

  def final_norm(self) -> bool:
    return self.cfg.norm_placement != "post"     # post-norm blocks end normalised


# ---------------------------------------------------------------------------------------------
# Registry hooks.

def flops_per_token(m, n_params: int, seq_len: int) -> float:
  return common.flops_per_token(m, n_params, kernel_flops_per_token(m, seq_len))


def kernel_flops_per_token(m, seq_len: int) -> float:
  """The attention kernel's part: 12·L·H·d_head·T (scores and values, fwd + bwd)."""
  return 12.0 * m.n_layers * m.n_heads * m.head_dim * seq_len
