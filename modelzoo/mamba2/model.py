"""Mamba-2 LM and Mamba-2 hybrids built from a layer-pattern string.

Mamba-2: Dao & Gu 2024, "Transformers are SSMs" (the SSD mixer, layers/ssm.py:Mamba2).
Hybrid: Waleffe et al. 2024, "An Empirical Study of Mamba-based Language Models" (Mamba-2-Hybrid).

Layer-pattern grammar (`model.layer_pattern`, the Megatron-LM `--hybrid-layer-pattern` symbols;
checked by Mamba2Config.check, expanded by Mamba2Config.pattern):

    pattern := symbol*          symbol := "M" | "*" | "-"
    M  Mamba-2 mixer     *  self-attention (GQA: n_heads, n_kv_heads; model.pos: none | rope)
    -  MLP (model.mlp, model.d_ff)

Each symbol is one pre-norm residual layer, x = x + f(RMSNorm(x)), so a Transformer block is "*-"
and a Mamba-2 block with an MLP is "M-". len(pattern) must equal model.n_layers; "" means
n_layers × "M" (pure Mamba-2, no MLP, as the paper's Mamba-2 8B). No other characters (spaces,
Megatron's "|" pipeline marks) are accepted. The paper's 8B hybrid (24 M + 4 * + 28 -, 56 layers,
attention spread evenly and never first):
    M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-

Stacking: a pattern that is a repetition of a unit ("M*-M*-" = 2 × "M*-", "MMMM" = 4 × "M") is
nn.scan-ned over its repeats (compile time independent of depth, parameters get the `layers`
axis); any other pattern, or scan_layers=false, is unrolled as layers_0 .. layers_{L-1}.
"""
from __future__ import annotations

import functools

import flax.linen as nn

from layers.block import Residual, Unit, stack
from layers.ssm import Mamba2
from modelzoo import common
from modelzoo.mamba.model import ssm_kw
from modelzoo.mamba2.config import SYMBOLS


def unit_of(pattern: str) -> str:
  """The shortest u with pattern == u * k."""
  L = len(pattern)
  return next(pattern[:p] for p in range(1, L + 1) if L % p == 0 and
              pattern[:p] * (L // p) == pattern)


def layer(m, kind: str, decode: bool):
  """x + f(RMSNorm(x)), f the Mamba-2 mixer (M), attention (*) or an MLP (-)."""
  if kind == "M":
    f = functools.partial(Mamba2, head_dim=m.ssm_head_dim, groups=m.ssm_groups,
                          norm_eps=m.norm_eps, **ssm_kw(m, decode))
  else:
    f = common.attention(m, decode) if kind == "*" else common.mlp(m)
  return functools.partial(Residual, f=f, norm=common.norm(m), mixes_tokens=kind != "-",
                           f_name={"M": "mixer", "*": "attn", "-": "mlp"}[kind])


class Mamba2LM(common.LM):
  """cfg: Mamba2Config (modelzoo/mamba2/config.py)."""

  @nn.nowrap
  def layers(self):
    m = self.cfg
    unit = unit_of(m.pattern)
    repeats = len(m.pattern) // len(unit)
    if m.scan_layers and repeats > 1:   # the unit's layers, scanned over its repeats
      f = functools.partial(Unit, layers=tuple(layer(m, k, self.decode) for k in unit),
                            names=tuple(f"{SYMBOLS[k]}_{j}" for j, k in enumerate(unit)))
      return stack([f] * repeats, scan=True, remat=m.remat)
    return stack([layer(m, k, self.decode) for k in m.pattern], scan=False, remat=m.remat)


# ---------------------------------------------------------------------------------------------
# Registry hooks.

def flops_per_token(c, n_params: int, seq_len: int) -> float:
  """6N (N without the untied input table) + attention 12·H·d_head·T per attention layer
  (decoder convention) + the SSD scan per Mamba-2 layer, forward per token with chunk L:
  C·Bᵀ 2·L·G·N, (C·Bᵀ∘decay)·X 2·L·E, chunk states and their readout 4·E·N; times 3 for training."""
  return common.flops_per_token(c, n_params, kernel_flops_per_token(c, seq_len))


def kernel_flops_per_token(c, seq_len: int) -> float:
  """The SSD and attention terms above: the work inside the ssd and attention kernels."""
  E, L, N = c.inner, c.ssm_chunk, c.d_state
  ssd = 3 * (2 * L * c.ssm_groups * N + 2 * L * E + 4 * E * N)
  return (c.pattern.count("M") * ssd
          + 12.0 * c.pattern.count("*") * c.n_heads * c.head_dim * seq_len)


def layer_unit(c) -> int:
  """Layers in the unit the stack repeats (the whole pattern when it is no repetition)."""
  return len(unit_of(c.pattern))
