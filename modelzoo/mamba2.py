"""Mamba-2 LM and Mamba-2 hybrids built from a layer-pattern string.

Mamba-2: Dao & Gu 2024, "Transformers are SSMs" (the SSD mixer, layers/ssm.py:Mamba2).
Hybrid: Waleffe et al. 2024, "An Empirical Study of Mamba-based Language Models" (Mamba-2-Hybrid).

Layer-pattern grammar (`model.layer_pattern`, the Megatron-LM `--hybrid-layer-pattern` symbols):

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

import flax.linen as nn

from configs.base import ConfigError
from layers.block import REMAT_POLICIES, attention_for, dtypes, norm_for, out_std
from layers.mlp import MLP
from layers.sharding import constrain
from layers.ssm import Mamba2
from modelzoo.mamba import check_ssm, language_model, ssm_kw

SYMBOLS = {"M": "mamba", "*": "attn", "-": "mlp"}


def layer_pattern(cfg) -> str:
  return cfg.layer_pattern or "M" * cfg.n_layers


def unit_of(pattern: str) -> str:
  """The shortest u with pattern == u * k."""
  L = len(pattern)
  return next(pattern[:p] for p in range(1, L + 1) if L % p == 0 and
              pattern[:p] * (L // p) == pattern)


class HybridLayer(nn.Module):
  cfg: object
  decode: bool = False
  kind: str = "M"

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    h_BTD = norm_for(cfg, "norm")(x_BTD)
    if self.kind == "M":
      h_BTD = Mamba2(head_dim=cfg.ssm_head_dim, groups=cfg.ssm_groups, norm_eps=cfg.norm_eps,
                     name="mixer", **ssm_kw(cfg, self.decode))(h_BTD)
    elif self.kind == "*":
      h_BTD = attention_for(cfg, self.decode)(h_BTD, positions_BT, segment_ids_BT, logit_scale)
    else:
      h_BTD = MLP(cfg.d_ff, kind=cfg.mlp, gelu_exact=cfg.gelu_exact, use_bias=cfg.use_bias,
                  init_std=cfg.init_std, out_std=out_std(cfg), name="mlp", **dtypes(cfg))(h_BTD)
    return constrain(x_BTD + h_BTD, ("batch", "length", "act_embed")), None


class Unit(nn.Module):
  """One repeat of the pattern's unit: its layers in order (the body that nn.scan repeats)."""
  cfg: object
  decode: bool = False
  unit: str = "M"

  @nn.compact
  def __call__(self, x_BTD, *args):
    for j, kind in enumerate(self.unit):
      x_BTD = HybridLayer(self.cfg, self.decode, kind, name=f"{SYMBOLS[kind]}_{j}")(x_BTD, *args)[0]
    return x_BTD, None


class Mamba2LM(nn.Module):
  cfg: object                   # configs.base.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    cfg = self.cfg
    pattern = layer_pattern(cfg)
    unit = unit_of(pattern)

    def body(x_BTD, pos_BT):
      args = (pos_BT, None, logit_scale)
      if cfg.scan_layers and len(unit) < len(pattern):
        cls = Unit
        if cfg.remat != "none":
          cls = nn.remat(cls, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        scanned = nn.scan(cls, variable_axes={"params": 0, "cache": 0},
                          split_rngs={"params": True}, in_axes=nn.broadcast,
                          length=len(pattern) // len(unit),
                          metadata_params={nn.PARTITION_NAME: "layers"})
        return scanned(cfg, self.decode, unit, name="layers")(x_BTD, *args)[0]
      cls = HybridLayer if cfg.remat == "none" else nn.remat(
          HybridLayer, policy=REMAT_POLICIES[cfg.remat])
      for i, kind in enumerate(pattern):
        x_BTD = cls(cfg, self.decode, kind, name=f"layers_{i}")(x_BTD, *args)[0]
      return x_BTD

    return language_model(cfg, tokens_BT, positions_BT, segment_ids_BT, body)


# ---------------------------------------------------------------------------------------------
# Registry hooks.

def check_config(c) -> None:
  check_ssm(c)
  bad = sorted(set(c.layer_pattern) - set(SYMBOLS))
  if bad:
    raise ConfigError(f"model.layer_pattern={c.layer_pattern!r}: unknown symbol(s) {bad}; use "
                      "M (Mamba-2), * (attention), - (MLP)")
  if c.layer_pattern and len(c.layer_pattern) != c.n_layers:
    raise ConfigError(f"model.layer_pattern has {len(c.layer_pattern)} layers but model.n_layers="
                      f"{c.n_layers}; they must agree")
  E = c.expand * c.d_model
  if E % c.ssm_head_dim:
    raise ConfigError(f"model.ssm_head_dim={c.ssm_head_dim} does not divide the inner width "
                      f"model.expand * model.d_model = {E}")
  H = E // c.ssm_head_dim
  if c.ssm_groups < 1 or H % c.ssm_groups:
    raise ConfigError(f"model.ssm_groups={c.ssm_groups} must divide the {H} Mamba-2 heads")
  if c.attn_impl in ("auto", "pallas") and (c.ssm_chunk < 16 or c.ssm_chunk & (c.ssm_chunk - 1)):
    raise ConfigError(f"model.ssm_chunk={c.ssm_chunk}: with model.attn_impl={c.attn_impl} the "
                      "SSD chunk must be a power of two >= 16 (Triton tiles)")


def flops_per_token(c, n_params: int, seq_len: int) -> float:
  """6N (N without the untied input table) + attention 12·H·d_head·T per attention layer
  (decoder convention) + the SSD scan per Mamba-2 layer, forward per token with chunk L:
  C·Bᵀ 2·L·G·N, (C·Bᵀ∘decay)·X 2·L·E, chunk states and their readout 4·E·N; times 3 for training."""
  n = n_params - (0 if c.tie_embeddings else c.vocab_size * c.d_model)
  return 6.0 * n + kernel_flops_per_token(c, seq_len)


def kernel_flops_per_token(c, seq_len: int) -> float:
  """The SSD and attention terms above: the work inside the ssd and attention kernels."""
  pattern = layer_pattern(c)
  E, L, N = c.expand * c.d_model, c.ssm_chunk, c.d_state
  ssd = 3 * (2 * L * c.ssm_groups * N + 2 * L * E + 4 * E * N)
  d_head = c.d_head or c.d_model // c.n_heads
  return pattern.count("M") * ssd + 12.0 * pattern.count("*") * c.n_heads * d_head * seq_len


def layer_unit(c) -> int:
  """Layers in the unit the stack repeats (the whole pattern when it is no repetition)."""
  return len(unit_of(layer_pattern(c)))
