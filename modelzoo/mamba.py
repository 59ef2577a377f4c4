"""Mamba LM (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces").

    x = Embed(tokens);  L × [x = x + Mamba(RMSNorm(x))];  logits = RMSNorm(x) · Embedᵀ

No attention, no MLP, no position embedding: the block is the mixer alone (layers/ssm.py), which is
why the paper's models have twice a Transformer's layer count at the same size. The reference pads
the vocabulary to a multiple of 8 (50277 -> 50280) and ties the head to the embedding.

Decoding keeps per layer the conv state and the SSM state in flax's "cache" collection
(`decode=True`), advancing one token at a time after a chunked prefill.

Packed sequences (segment ids) are not supported: the scan kernels have no state reset.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from configs.base import ConfigError
from layers.block import dtypes, norm_for, out_std, stack
from layers.dense import Dense
from layers.embed import Embed
from layers.sharding import constrain
from layers.ssm import Mamba


def ssm_kw(cfg, decode: bool) -> dict:
  """Arguments shared by both mixers, from the config."""
  return dict(d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, dt_min=cfg.dt_min,
              dt_max=cfg.dt_max, chunk=cfg.ssm_chunk, impl=cfg.attn_impl, use_bias=cfg.use_bias,
              init_std=cfg.init_std, out_std=out_std(cfg), decode=decode, **dtypes(cfg))


def language_model(cfg, tokens_BT, positions_BT, segment_ids_BT, body):
  """Embedding -> body(x, positions) -> final norm -> (tied) head. Called from a compact method,
  so the modules made here belong to the calling model."""
  if segment_ids_BT is not None:
    raise ConfigError(f"model.name={cfg.name}: packed sequences (data.pack=true) are not "
                      "supported; the SSM scans carry state across document boundaries")
  if positions_BT is None:
    positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
  embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, name="embed", **dtypes(cfg))
  x_BTD = constrain(embed(tokens_BT), ("batch", "length", "act_embed"))
  x_BTD = norm_for(cfg, "norm_f")(body(x_BTD, positions_BT))
  if cfg.tie_embeddings:
    logits_BTV = embed.attend(x_BTD)
  else:
    logits_BTV = Dense((cfg.vocab_size,), ("embed", "vocab"), use_bias=False,
                       init_std=cfg.init_std, name="head", **dtypes(cfg))(x_BTD)
  return constrain(logits_BTV, ("batch", "length", "act_vocab"))


class MambaBlock(nn.Module):
  cfg: object
  decode: bool = False

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    h_BTD = Mamba(dt_rank=cfg.dt_rank, name="mixer", **ssm_kw(cfg, self.decode))(
        norm_for(cfg, "norm")(x_BTD))
    return constrain(x_BTD + h_BTD, ("batch", "length", "act_embed")), None


class MambaLM(nn.Module):
  cfg: object                   # configs.base.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    layers = stack(MambaBlock, self.cfg, self.decode)
    return language_model(self.cfg, tokens_BT, positions_BT, segment_ids_BT,
                          lambda x, pos: layers(x, pos, None, logit_scale))


# ---------------------------------------------------------------------------------------------
# Registry hooks.

def check_ssm(c) -> None:
  """Checks shared by Mamba and Mamba-2 (ConfigError names the key)."""
  for key in ("d_state", "d_conv", "expand", "ssm_chunk"):
    if getattr(c, key) < 1:
      raise ConfigError(f"model.{key}={getattr(c, key)} must be >= 1")
  if c.ssm_chunk % 8:
    raise ConfigError(f"model.ssm_chunk={c.ssm_chunk} must be a multiple of 8 (TPU tiling)")
  if not 0.0 < c.dt_min <= c.dt_max:
    raise ConfigError(f"model.dt_min={c.dt_min}, model.dt_max={c.dt_max}: need 0 < dt_min <= "
                      "dt_max")
  if c.pos == "learned":
    raise ConfigError(f"model.pos=learned: {c.name} has no position table; set model.pos=none")


def check_config(c) -> None:
  check_ssm(c)
  if c.dt_rank < 0:
    raise ConfigError(f"model.dt_rank={c.dt_rank} must be >= 0 (0 = ceil(d_model / 16))")
  if c.layer_pattern:
    raise ConfigError("model.layer_pattern is for model.name=mamba2 (hybrids); Mamba-1 stacks "
                      "model.n_layers Mamba blocks")


def flops_per_token(c, n_params: int, seq_len: int) -> float:
  """6N (N without the untied input table, a lookup) + the scan: per layer and token the
  recurrence does ~3 multiply-adds per state element (decay, input, readout), 6·E·N FLOPs
  forward, times 3 for forward + backward."""
  n = n_params - (0 if c.tie_embeddings else c.vocab_size * c.d_model)
  return 6.0 * n + kernel_flops_per_token(c, seq_len)


def kernel_flops_per_token(c, seq_len: int) -> float:
  """The selective scan's part (the recurrence above), inside the scan kernel."""
  return 3 * 6.0 * c.n_layers * c.expand * c.d_model * c.d_state
