"""Mamba LM (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces").

    x = Embed(tokens);  L × [x = x + Mamba(RMSNorm(x))];  logits = RMSNorm(x) · Embedᵀ

model.ssm_selective=false is the paper's LTI ablation (Δ, B, C learned parameters instead of
projections of x; layers/ssm.py): x_proj and dt_proj go, dt_bias [E], B and C [E, N] come, a change of
-2·R·E parameters per layer; the FLOP count below keeps its form (6N with that N, and the same scan
term: the LTI scan runs over E·N pairs of state size 1, the same E·N state elements per token).

No attention, no MLP, no position embedding: the block is the mixer alone (layers/ssm.py), which is
why the paper's models have twice a Transformer's layer count at the same size. The reference pads
the vocabulary to a multiple of 8 (50277 -> 50280) and ties the head to the embedding.

Decoding keeps per layer the conv state and the SSM state in flax's "cache" collection
(`decode=True`), advancing one token at a time after a chunked prefill.

Packed sequences (segment ids) are not supported: the scan kernels have no state reset
(MambaConfig.packing is False: configs.base.validate refuses data.pack=true).
"""
from __future__ import annotations

import functools

import flax.linen as nn

from layers.block import Residual, stack
from layers.ssm import Mamba
from modelzoo import common


def ssm_kw(m, decode: bool) -> dict:
  """Arguments shared by both mixers (Mamba and Mamba-2), from the config."""
  return dict(d_state=m.d_state, d_conv=m.d_conv, expand=m.expand, dt_min=m.dt_min,
              dt_max=m.dt_max, chunk=m.ssm_chunk, impl=m.attn_impl, use_bias=m.use_bias,
              init_std=m.init_std, out_std=common.out_std(m), decode=decode, **common.dtypes(m))


def layer(m, decode: bool):
  """x + Mamba(RMSNorm(x)): the whole block."""
  mixer = functools.partial(Mamba, dt_rank=m.rank, selective=m.ssm_selective, **ssm_kw(m, decode))
  return functools.partial(Residual, f=mixer, norm=common.norm(m))


class MambaLM(common.LM):
  """cfg: MambaConfig (modelzoo/mamba/config.py)."""

  @nn.nowrap
  def layers(self):
    m = self.cfg
    return stack([layer(m, self.decode)] * m.n_layers, scan=m.scan_layers, remat=m.remat)


# ---------------------------------------------------------------------------------------------
# Registry hooks.

def flops_per_token(c, n_params: int, seq_len: int) -> float:
  """6N (N without the untied input table, a lookup) + the scan: per layer and token the
  recurrence does ~3 multiply-adds per state element (decay, input, readout), 6·E·N FLOPs
  forward, times 3 for forward + backward."""
  return common.flops_per_token(c, n_params, kernel_flops_per_token(c, seq_len))


def kernel_flops_per_token(c, seq_len: int) -> float:
  """The selective scan's part (the recurrence above), inside the scan kernel."""
  return 3 * 6.0 * c.n_layers * c.inner * c.d_state
