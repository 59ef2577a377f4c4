"""The DeltaNet config: the mixer (dn_*), its hybrids' attention layers (heads) and the MLP."""
from __future__ import annotations

from dataclasses import dataclass, field

from configs.schema import ConfigError, ModelConfig, choice, nonneg, positive
from modelzoo.config import HeadFields, MLPFields


@dataclass(frozen=True)
class DeltaNetConfig(MLPFields, HeadFields, ModelConfig):
  name: str = field(default="deltanet", init=False)
  pos: str = choice("rope", ("learned", "rope", "none"))   # of the hybrids' attention layers
  use_bias: bool = True               # biases on the mixer, attention and MLP projections
  dn_conv: int = nonneg(4)            # causal depthwise conv width on q, k, v; 0 = none
  dn_gate: bool = False               # output gate: RMSNorm(o) * SiLU(W_g x)
  dn_decay: bool = False              # gated delta rule: g = -exp(A_log) softplus(W_a x + dt_bias)
  dn_rule: str = choice("delta", ("delta", "linear"))   # linear: plain linear attention, the
                                      # paper's baseline (S += k v^T; layers/deltanet.py), no beta
  dn_chunk: int = choice(64, (16, 32, 64))   # delta-rule chunk size C
  dn_hybrid: str = choice("none", ("none", "swa", "global"))   # swa: window attention every
                                      # other layer; global: attention on layers 2 and L/2+1
  dn_window: int = positive(512)      # keys seen by a swa-hybrid attention layer (itself included)

  @property
  def packing(self) -> bool:
    """Packed sequences reset the state with a decay, which the linear rule has not."""
    return self.dn_rule == "delta"

  @property
  def layout(self) -> str:
    """One letter per layer: D DeltaNet, S sliding-window attention, A global attention."""
    L = self.n_layers
    if self.dn_hybrid == "swa":
      return "DS" * (L // 2)
    if self.dn_hybrid == "global":
      return "".join("A" if i in (1, L // 2) else "D" for i in range(L))
    return "D" * L

  def check(self) -> None:
    super().check()
    self.check_heads()
    self.check_mlp()
    if self.pos == "learned":
      raise ConfigError("model.pos=learned: DeltaNet has no position table; use rope (hybrid "
                        "attention layers) or none")
    if self.dn_rule == "linear" and self.dn_decay:
      raise ConfigError("model.dn_decay=true with model.dn_rule=linear: the linear-attention "
                        "baseline has no decay; set model.dn_decay=false")
    if self.dn_hybrid == "swa" and self.n_layers % 2:
      raise ConfigError(f"model.dn_hybrid=swa alternates layers: model.n_layers={self.n_layers} "
                        "must be even")
    if self.dn_hybrid == "global" and self.n_layers < 4:
      raise ConfigError(f"model.dn_hybrid=global puts attention on layers 2 and L/2+1: "
                        f"model.n_layers={self.n_layers} must be >= 4")
