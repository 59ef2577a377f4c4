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

import functools
import math

import flax.linen as nn

from configs.base import ConfigError
from layers.block import Residual, stack
from layers.ssm import Mamba
from modelzoo import common


def ssm_kw(m, decode: bool) -> dict:
  """Arguments shared by both mixers (Mamba and Mamba-2), from the config."""
  return dict(d_state=m.d_state, d_conv=m.d_conv, expand=m.expand, dt_min=m.dt_min,
              dt_max=m.dt_max, chunk=m.ssm_chunk, impl=m.attn_impl, use_bias=m.use_bias,
              init_std=m.init_std, out_std=common.out_std(m), decode=decode, **common.dtypes(m))


def refuse_packing(m, segment_ids_BT) -> None:
  if segment_ids_BT is not None:
    raise ConfigError(f"model.name={m.name}: packed sequences (data.pack=true) are not "
                      "supported; the SSM scans carry state across document boundaries")


def layer(m, decode: bool):
  """x + Mamba(RMSNorm(x)): the whole block."""
  mixer = functools.partial(Mamba, dt_rank=m.dt_rank or math.ceil(m.d_model / 16),
                            **ssm_kw(m, decode))
  return functools.partial(Residual, f=mixer, norm=common.norm(m))


class MambaLM(nn.Module):
  cfg: object                   # the model config
  decode: bool = False

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    m = self.cfg
    refuse_packing(m, segment_ids_BT)
    layers = stack([layer(m, self.decode)] * m.n_layers, scan=m.scan_layers, remat=m.remat)
    return common.language_model(m, tokens_BT, positions_BT,
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
  return common.flops_per_token(c, n_params, kernel_flops_per_token(c, seq_len))


def kernel_flops_per_token(c, seq_len: int) -> float:
  """The selective scan's part (the recurrence above), inside the scan kernel."""
  return 3 * 6.0 * c.n_layers * c.expand * c.d_model * c.d_state
