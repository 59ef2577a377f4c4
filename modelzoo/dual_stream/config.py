"""The Dual-Stream Transformer's config: heads, FFN width, and the head mixing of each projection.

The model has one attention (softmax, RoPE or none, no GQA, d_head = d_model / n_heads), one FFN
(GELU) and no biases: the decoder's fields for other choices are not fields here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from configs.base import ConfigError, ModelConfig, choice, positive
from layers.head_mix import KINDS

PER_HEAD = ("dense", "independent")   # the FFN maps change the per-head width: no Kronecker


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
  kron_init: str = choice("identity", ("identity", "normal"))   # Kronecker M: I + N(0, init_std^2)
                                                                # | N(0, init_std^2)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

  @property
  def ffn_head_dim(self) -> int:
    return self.d_ff // self.n_heads

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
