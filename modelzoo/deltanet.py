"""DeltaNet LM (Yang et al. 2024, arXiv:2406.06484), its two attention hybrids, and Gated DeltaNet.

Each layer is a Llama-style pre-norm block,  x += mixer(Norm(x));  x += MLP(Norm(x)),  whose
mixer is one of (one letter per layer in `layout`):
  D  the DeltaNet mixer (layers/deltanet.py); model.dn_decay=true makes it Gated DeltaNet
  S  softmax attention over a sliding window of model.dn_window keys   (dn_hybrid=swa: odd layers)
  A  global softmax attention                    (dn_hybrid=global: layers 2 and L/2+1, 1-based)
There is no position embedding: DeltaNet is order-aware through its recurrence and conv; the
attention layers of the hybrids use RoPE (model.pos=rope).

Layers are grouped into runs of one repeating unit ("D" x 24, "DS" x 12, ...) and each run is an
nn.scan, so compile time does not grow with depth. Decoding keeps the KV cache of the attention
layers and the conv inputs + delta state of the DeltaNet layers in the "cache" collection.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from configs.base import ConfigError
from layers.block import REMAT_POLICIES, attention_for, dtypes, norm_for, out_std
from layers.deltanet import DeltaNetMixer
from layers.dense import Dense
from layers.embed import Embed
from layers.mlp import MLP
from layers.sharding import constrain

HYBRIDS = ("none", "swa", "global")


def layout(cfg) -> str:
  L = cfg.n_layers
  if cfg.dn_hybrid == "swa":
    return "DS" * (L // 2)
  if cfg.dn_hybrid == "global":
    return "".join("A" if i in (1, L // 2) else "D" for i in range(L))
  return "D" * L


def runs(kinds: str) -> list[tuple[str, int]]:
  """(unit, repeats) covering `kinds`: one run if periodic with a short unit, else per kind."""
  for p in range(1, 5):
    if len(kinds) % p == 0 and kinds == kinds[:p] * (len(kinds) // p):
      return [(kinds[:p], len(kinds) // p)]
  out = []
  for k in kinds:
    if out and out[-1][0] == k:
      out[-1] = (k, out[-1][1] + 1)
    else:
      out.append((k, 1))
  return out


def d_head(cfg) -> int:
  return cfg.d_head or cfg.d_model // cfg.n_heads


def check_config(m) -> None:
  if m.dn_hybrid not in HYBRIDS:
    raise ConfigError(f"model.dn_hybrid={m.dn_hybrid!r} is not one of {HYBRIDS}")
  if m.dn_chunk not in (16, 32, 64):
    raise ConfigError(f"model.dn_chunk={m.dn_chunk} must be 16, 32 or 64")
  if m.dn_conv < 0 or m.dn_window < 1:
    raise ConfigError("model.dn_conv must be >= 0 and model.dn_window >= 1")
  if m.pos == "learned":
    raise ConfigError("model.pos=learned: DeltaNet has no position table; use rope (hybrid "
                      "attention layers) or none")
  if m.norm_placement != "pre" or m.hybrid_norm or m.layer_scale:
    raise ConfigError("model.norm_placement=pre without hybrid_norm/layer_scale is the only "
                      "DeltaNet block")
  if m.dn_hybrid == "swa" and m.n_layers % 2:
    raise ConfigError(f"model.dn_hybrid=swa alternates layers: model.n_layers={m.n_layers} must "
                      "be even")
  if m.dn_hybrid == "global" and m.n_layers < 4:
    raise ConfigError(f"model.dn_hybrid=global puts attention on layers 2 and L/2+1: "
                      f"model.n_layers={m.n_layers} must be >= 4")


def flops_per_token(m, n_params: int, seq_len: int) -> float:
  """6N (N without the untied input table) + the mixers' own matmuls, fwd + bwd (x3).

  Attention: 12 H d_h T per layer (window min(W, T) for S), the decoder's convention. DeltaNet per
  head, chunk C, state K x V: intra-chunk KK^T, QK^T, the WY products and P V_new cost
  2C(3K + 2V) per token; W S, Q S and the state update K^T V_new cost 6KV.
  """
  n = n_params - (0 if m.tie_embeddings else m.vocab_size * m.d_model)
  return 6.0 * n + kernel_flops_per_token(m, seq_len)


def kernel_flops_per_token(m, seq_len: int) -> float:
  """The mixers' terms above: the work inside the delta-rule and attention kernels."""
  H, K, T, C = m.n_heads, d_head(m), seq_len, m.dn_chunk
  per = {"D": 3.0 * H * (2 * C * 5 * K + 6 * K * K), "A": 12.0 * H * K * T,
         "S": 12.0 * H * K * min(m.dn_window, T)}
  return sum(per[k] for k in layout(m))


def layer_unit(m) -> int:
  """Layers in the unit the stack repeats ("DS" for swa; the whole stack for global: no repeat)."""
  unit_runs = runs(layout(m))
  return len(unit_runs[0][0]) if len(unit_runs) == 1 else m.n_layers


class DeltaNetBlock(nn.Module):
  cfg: object
  decode: bool = False
  kind: str = "D"

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    h_BTD = norm_for(cfg, "norm1")(x_BTD)
    if self.kind == "D":
      h_BTD = DeltaNetMixer(
          cfg.n_heads, d_head(cfg), d_conv=cfg.dn_conv, gate=cfg.dn_gate, decay=cfg.dn_decay,
          chunk_size=cfg.dn_chunk, norm_eps=cfg.norm_eps, use_bias=cfg.use_bias,
          impl=cfg.attn_impl, init_std=cfg.init_std, out_std=out_std(cfg), decode=self.decode,
          name="mixer", **dtypes(cfg))(h_BTD, segment_ids_BT)
    else:
      window = cfg.dn_window if self.kind == "S" else None
      h_BTD = attention_for(cfg, self.decode, window=window)(h_BTD, positions_BT, segment_ids_BT,
                                                             logit_scale)
    x_BTD = x_BTD + h_BTD
    mlp = MLP(cfg.d_ff, kind=cfg.mlp, gelu_exact=cfg.gelu_exact, use_bias=cfg.use_bias,
              init_std=cfg.init_std, out_std=out_std(cfg), name="mlp", **dtypes(cfg))
    x_BTD = x_BTD + mlp(norm_for(cfg, "norm2")(x_BTD))
    return constrain(x_BTD, ("batch", "length", "act_embed")), None


class Unit(nn.Module):
  """A short repeating pattern of layers (e.g. "DS"), the body of one scan."""
  cfg: object
  decode: bool = False
  kinds: str = "D"

  @nn.compact
  def __call__(self, x_BTD, *args):
    for i, kind in enumerate(self.kinds):
      x_BTD = DeltaNetBlock(self.cfg, self.decode, kind, name=f"block{i}")(x_BTD, *args)[0]
    return x_BTD, None


def run(cfg, decode: bool, unit: str, repeats: int, name: str):
  cls, kw = (DeltaNetBlock, {"kind": unit}) if len(unit) == 1 else (Unit, {"kinds": unit})
  if cfg.remat != "none":
    cls = nn.remat(cls, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers and repeats > 1:
    scanned = nn.scan(cls, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=repeats,
                      metadata_params={nn.PARTITION_NAME: "layers"})(cfg, decode, name=name, **kw)
    return lambda x, *args: scanned(x, *args)[0]
  blocks = [cls(cfg, decode, name=f"{name}_{i}" if repeats > 1 else name, **kw)
            for i in range(repeats)]

  def apply(x, *args):
    for b in blocks:
      x = b(x, *args)[0]
    return x
  return apply


class DeltaNetLM(nn.Module):
  cfg: object                   # configs.base.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    cfg = self.cfg
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, name="embed", **dtypes(cfg))
    x_BTD = constrain(embed(tokens_BT), ("batch", "length", "act_embed"))
    groups = runs(layout(cfg))
    for i, (unit, repeats) in enumerate(groups):
      name = "layers" if len(groups) == 1 else f"layers{i}"
      x_BTD = run(cfg, self.decode, unit, repeats, name)(x_BTD, positions_BT, segment_ids_BT,
                                                         logit_scale)
    x_BTD = norm_for(cfg, "norm_f")(x_BTD)
    if cfg.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      logits_BTV = Dense((cfg.vocab_size,), ("embed", "vocab"), use_bias=False,
                         init_std=cfg.init_std, name="head", **dtypes(cfg))(x_BTD)
    return constrain(logits_BTV, ("batch", "length", "act_vocab"))
