"""The Mamba config, and the SSM fields Mamba-2 shares."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from configs.schema import ConfigError, ModelConfig, choice, nonneg, positive


@dataclass(frozen=True)
class SSMFields:
  """The selective-SSM mixer: state, conv, inner width, Δ initialisation, scan chunk."""
  d_state: int = positive(16)         # N: SSM state size (per channel in Mamba-1, per head in Mamba-2)
  d_conv: int = positive(4)           # width of the causal depthwise conv before the scan
  expand: int = positive(2)           # E = expand * d_model, the mixer's inner width
  dt_min: float = 0.001               # softplus(dt_bias) is initialised log-uniform in
  dt_max: float = 0.1                 # [dt_min, dt_max]
  ssm_chunk: int = positive(64)       # scan chunk length (Mamba-2 on auto/pallas: power of two >= 16)

  packing: ClassVar[bool] = False     # the scans carry state across document boundaries

  @property
  def inner(self) -> int:
    return self.expand * self.d_model

  def check_ssm(self) -> None:
    if self.ssm_chunk % 8:
      raise ConfigError(f"model.ssm_chunk={self.ssm_chunk} must be a multiple of 8 (TPU tiling)")
    if not 0.0 < self.dt_min <= self.dt_max:
      raise ConfigError(f"model.dt_min={self.dt_min}, model.dt_max={self.dt_max}: need 0 < "
                        "dt_min <= dt_max")
    if self.pos == "learned":
      raise ConfigError(f"model.pos=learned: {self.name} has no position table; set "
                        "model.pos=none")


@dataclass(frozen=True)
class MambaConfig(SSMFields, ModelConfig):
  name: str = field(default="mamba", init=False)
  pos: str = choice("none", ("learned", "rope", "none"))   # none: no position embedding at all
  use_bias: bool = True               # biases on in_proj / out_proj (the reference has none)
  dt_rank: int = nonneg(0)            # R: the low-rank Δ projection; 0 = ceil(d_model / 16)
  ssm_selective: bool = True          # false: the LTI ablation (S4D-like): Δ, B, C learned per
                                      # channel, not functions of x (layers/ssm.py, docs/mamba.md)

  @property
  def rank(self) -> int:
    return self.dt_rank or math.ceil(self.d_model / 16)

  def check(self) -> None:
    super().check()
    self.check_ssm()
    if not self.ssm_selective and self.dt_rank:
      raise ConfigError(f"model.dt_rank={self.dt_rank} has no effect with "
                        "model.ssm_selective=false (the LTI ablation has no Δ projection); "
                        "leave it 0")
