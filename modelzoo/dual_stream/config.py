"""The Dual-Stream Transformer's config: heads, FFN width, and the head mixing of each projection.

The model has one attention (softmax, RoPE or none, no GQA, d_head = d_model / n_heads), one FFN
(GELU) and no biases: the decoder's fields for other choices are not fields here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from configs.schema import ConfigError, ModelConfig, choice, nonneg, positive
from layers.head_mix import KINDS

PER_HEAD = ("dense", "independent")   # the FFN maps change the per-head width: no Kronecker
KRON_INITS = ("identity", "normal")


@dataclass(frozen=True)
class DualStreamConfig(ModelConfig):
  name: str = field(default="dual_stream", init=False)
  pos: str = choice("rope", ("learned", "rope", "none"))   # RoPE inside attention (the paper's)
  n_heads: int = positive(4)          # H: channels of the streams
  d_ff: int = positive(1024)          # F, laid out (H, F/H)
  rope_theta: float = 10000.0
  gelu_exact: bool = False            # erf GELU; the tanh form is much cheaper in the CPU backward
  mix_v: str = choice("dense", KINDS)            # head mixing of the V projection
  mix_o: str = choice("dense", KINDS)            # ... of the attention output projection O
  mix_up: str = choice("dense", PER_HEAD)        # ... of the FFN up projection (independent:
  mix_down: str = choice("dense", PER_HEAD)      # per-head FFN) and of its down projection
  cln: bool = True                    # channel-wise LayerNorm (one LN per head); False: LN over D
  v_norm: bool = True                 # V reads CLN_v(x_t); False: the raw token stream x_t
  frozen_tokens: bool = False         # Frozen-Token-Stream: x_t stays the embedding, attention
                                      # writes x_e
  # Initialisation of the Kronecker maps M_V (value) and M_O (attention output), used only where
  # mix_v / mix_o is "kronecker": identity = I + N(0, std^2), normal = N(0, std^2). Default: M_V
  # identity (each head's value starts as its own channel), M_O normal at GPT-2's output std.
  # kron_init sets both maps ("" = those defaults; older config.json files carry identity or
  # normal and load as they ran); kron_init_v / kron_init_o set one map ("" = kron_init). The
  # stds default (0) to init_std for M_V and init_std / sqrt(2 n_layers) for M_O (GPT-2's scaling
  # of every map that writes to the residual). docs/dual_stream.md, "Initialisation".
  kron_init: str = choice("", ("",) + KRON_INITS)
  kron_init_v: str = choice("", ("",) + KRON_INITS)
  kron_init_o: str = choice("", ("",) + KRON_INITS)
  kron_std_v: float = nonneg(0.0)     # 0 = init_std
  kron_std_o: float = nonneg(0.0)     # 0 = init_std / sqrt(2 n_layers)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

  @property
  def ffn_head_dim(self) -> int:
    return self.d_ff // self.n_heads

  @property
  def kron_init_v_resolved(self) -> tuple[str, float]:
    """(identity | normal, std) of the Kronecker value map M_V."""
    return self.kron_init_v or self.kron_init or "identity", self.kron_std_v or self.init_std

  @property
  def kron_init_o_resolved(self) -> tuple[str, float]:
    """(identity | normal, std) of the Kronecker output map M_O."""
    return (self.kron_init_o or self.kron_init or "normal",
            self.kron_std_o or self.init_std / math.sqrt(2 * self.n_layers))

  def check(self) -> None:
    super().check()
    if self.pos == "learned":
      raise ConfigError("model.pos='learned': the Dual-Stream model adds no position vector to "
                        "its streams; use 'rope' (the paper's) or 'none'")
    if self.d_model % self.n_heads:
      raise ConfigError(f"model.n_heads={self.n_heads} must divide model.d_model={self.d_model} "
                        "(channels are the heads' slices of the streams)")
    if self.d_ff % self.n_heads:
      raise ConfigError(f"model.n_heads={self.n_heads} must divide model.d_ff={self.d_ff} (FFN "
                        "units are laid out per head)")
    if self.pos == "rope" and self.head_dim % 2:
      raise ConfigError("RoPE needs an even head dimension")
