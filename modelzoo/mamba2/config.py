"""The Mamba-2 config: the SSD mixer, and a hybrid's attention (heads) and MLP layers given by a
layer-pattern string (modelzoo/mamba2/model.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from configs.schema import ConfigError, ModelConfig, choice, positive
from modelzoo.config import HeadFields, MLPFields
from modelzoo.mamba.config import SSMFields

SYMBOLS = {"M": "mamba", "*": "attn", "-": "mlp"}   # Mamba-2 mixer, self-attention, MLP


@dataclass(frozen=True)
class Mamba2Config(SSMFields, MLPFields, HeadFields, ModelConfig):
  name: str = field(default="mamba2", init=False)
  pos: str = choice("none", ("learned", "rope", "none"))   # of the attention layers
  use_bias: bool = True               # biases on the mixer, attention and MLP projections
  ssm_head_dim: int = positive(64)    # P: Mamba-2 head dim (heads = E / P)
  ssm_groups: int = positive(1)       # G: B/C groups (heads share B, C within a group)
  layer_pattern: str = ""             # one symbol per layer: M mamba2, * attention, - MLP
                                      # (e.g. "M-M*-"); "" = n_layers x M

  @property
  def pattern(self) -> str:
    return self.layer_pattern or "M" * self.n_layers

  @property
  def ssm_heads(self) -> int:
    return self.inner // self.ssm_head_dim

  def with_depth(self, n_layers: int) -> Mamba2Config:
    return replace(self, n_layers=n_layers, layer_pattern=self.layer_pattern[:n_layers])

  def check(self) -> None:
    super().check()
    self.check_ssm()
    if "*" in self.pattern:
      self.check_heads()
    self.check_mlp()
    bad = sorted(set(self.layer_pattern) - set(SYMBOLS))
    if bad:
      raise ConfigError(f"model.layer_pattern={self.layer_pattern!r}: unknown symbol(s) {bad}; "
                        "use M (Mamba-2), * (attention), - (MLP)")
    if self.layer_pattern and len(self.layer_pattern) != self.n_layers:
      raise ConfigError(f"model.layer_pattern has {len(self.layer_pattern)} layers but "
                        f"model.n_layers={self.n_layers}; they must agree")
    if self.inner % self.ssm_head_dim:
      raise ConfigError(f"model.ssm_head_dim={self.ssm_head_dim} does not divide the inner width "
                        f"model.expand * model.d_model = {self.inner}")
    if self.ssm_heads % self.ssm_groups:
      raise ConfigError(f"model.ssm_groups={self.ssm_groups} must divide the {self.ssm_heads} "
                        "Mamba-2 heads")
    C = self.ssm_chunk
    if self.attn_impl in ("auto", "pallas") and (C < 16 or C & (C - 1)):
      raise ConfigError(f"model.ssm_chunk={C}: with model.attn_impl={self.attn_impl} the SSD "
                        "chunk must be a power of two >= 16 (Triton tiles)")
