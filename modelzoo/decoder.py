"""Decoder-only LM covering GPT-2 style and Llama style, chosen by config fields (configs/base.py)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from layers.block import Block, dtypes, matmul_dtypes, norm_for, stack
from layers.embed import Embed, LearnedPositions
from layers.dense import Dense
from layers.sharding import constrain


class DecoderLM(nn.Module):
  cfg: object                   # configs.base.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    cfg = self.cfg
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, name="embed", **matmul_dtypes(cfg))
    x_BTD = embed(tokens_BT)
    if cfg.pos == "learned":
      x_BTD = x_BTD + LearnedPositions(cfg.max_len, cfg.d_model, cfg.init_std, name="pos",
                                       **dtypes(cfg))(positions_BT)
    x_BTD = constrain(x_BTD, ("batch", "length", "act_embed"))
    x_BTD = stack(Block, cfg, self.decode)(x_BTD, positions_BT, segment_ids_BT, logit_scale)
    if cfg.norm_placement == "pre":
      x_BTD = norm_for(cfg, "norm_f")(x_BTD)
    if cfg.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      logits_BTV = Dense((cfg.vocab_size,), ("embed", "vocab"), use_bias=False,
                         init_std=cfg.init_std, name="head", **matmul_dtypes(cfg))(x_BTD)
    return constrain(logits_BTV, ("batch", "length", "act_vocab"))
