"""DeltaNet LM (Yang et al. 2024, arXiv:2406.06484), its two attention hybrids, and Gated DeltaNet.

Each layer is a Llama-style pre-norm block,  x += mixer(Norm(x));  x += MLP(Norm(x)),  whose
mixer is one of (one letter per layer in DeltaNetConfig.layout):
  D  the DeltaNet mixer (layers/deltanet.py); model.dn_decay=true makes it Gated DeltaNet,
     model.dn_rule=linear plain linear attention (S += k vᵀ, the paper's baseline; same layer)
  S  softmax attention over a sliding window of model.dn_window keys   (dn_hybrid=swa: odd layers)
  A  global softmax attention                    (dn_hybrid=global: layers 2 and L/2+1, 1-based)
There is no position embedding: DeltaNet is order-aware through its recurrence and conv; the
attention layers of the hybrids use RoPE (model.pos=rope).

Layers are grouped into runs of one repeating unit ("D" x 24, "DS" x 12, ...) and each run is an
nn.scan, so compile time does not grow with depth. Decoding keeps the KV cache of the attention
layers and the conv inputs + delta state of the DeltaNet layers in the "cache" collection.
"""
from __future__ import annotations

import functools

import flax.linen as nn

from layers.block import Block, Unit, stack
from layers.deltanet import DeltaNetMixer
from modelzoo import common


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


def flops_per_token(m, n_params: int, seq_len: int) -> float:
  """6N (N without the untied input table) + the mixers' own matmuls, fwd + bwd (x3).

  Attention: 12 H d_h T per layer (window min(W, T) for S), the decoder's convention. DeltaNet per
  head, chunk C, state K x V: intra-chunk KK^T, QK^T, the WY products and P V_new cost
  2C(3K + 2V) per token; W S, Q S and the state update K^T V_new cost 6KV. Linear attention
  (dn_rule=linear, the SSD kernel with G = H, N = K, P = V, chunk C): C·Bᵀ 2CK, its product with
  X 2CV, chunk states and their readout 4KV per head and token.
  """
  return common.flops_per_token(m, n_params, kernel_flops_per_token(m, seq_len))


def kernel_flops_per_token(m, seq_len: int) -> float:
  """The mixers' terms above: the work inside the delta-rule and attention kernels."""
  H, K, T, C = m.n_heads, m.head_dim, seq_len, m.dn_chunk
  mixer = (2 * C * 2 * K + 4 * K * K) if m.dn_rule == "linear" else (2 * C * 5 * K + 6 * K * K)
  per = {"D": 3.0 * H * mixer, "A": 12.0 * H * K * T,
         "S": 12.0 * H * K * min(m.dn_window, T)}
  return sum(per[k] for k in m.layout)


def layer_unit(m) -> int:
  """Layers in the unit the stack repeats ("DS" for swa; the whole stack for global: no repeat)."""
  unit_runs = runs(m.layout)
  return len(unit_runs[0][0]) if len(unit_runs) == 1 else m.n_layers


def layer(m, kind: str, decode: bool):
  """A pre-norm block whose mixer is the DeltaNet mixer (D) or attention (S windowed, A global)."""
  if kind == "D":
    mixer = functools.partial(
        DeltaNetMixer, n_heads=m.n_heads, d_head=m.head_dim, d_conv=m.dn_conv, gate=m.dn_gate,
        decay=m.dn_decay, rule=m.dn_rule, chunk_size=m.dn_chunk, norm_eps=m.norm_eps, use_bias=m.use_bias,
        impl=m.attn_impl, init_std=m.init_std, out_std=common.out_std(m), decode=decode,
        **common.dtypes(m))
  else:
    mixer = common.attention(m, decode, window=m.dn_window if kind == "S" else None)
  return functools.partial(Block, mixer=mixer, mlp=common.mlp(m), norm=common.norm(m),
                           mixer_name="mixer" if kind == "D" else "attn")


class DeltaNetLM(common.LM):
  """cfg: DeltaNetConfig (modelzoo/deltanet/config.py)."""

  @nn.nowrap
  def layers(self):
    m, stacks = self.cfg, []
    groups = runs(m.layout)
    for i, (unit, repeats) in enumerate(groups):
      name = "layers" if len(groups) == 1 else f"layers{i}"
      f = layer(m, unit, self.decode) if len(unit) == 1 else functools.partial(
          Unit, layers=tuple(layer(m, k, self.decode) for k in unit),
          names=tuple(f"block{j}" for j in range(len(unit))))
      stacks.append(stack([f] * repeats, scan=m.scan_layers and repeats > 1, remat=m.remat,
                          name=name, names=None if repeats > 1 else [name]))

    def run(x_BTD, *args):
      for s in stacks:
        x_BTD = s(x_BTD, *args)
      return x_BTD
    return run
