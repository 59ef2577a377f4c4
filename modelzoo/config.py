"""Field groups several families' configs share: attention heads and the MLP.

A family's config (modelzoo/<family>/config.py) is a frozen dataclass that extends
configs.base.ModelConfig with the groups it uses, listed before the base
(`class DecoderConfig(MLPFields, HeadFields, ModelConfig)`) so that the JSON keeps the base's
fields first. A group declares its fields, their derived values and a check_* method that the
family's check() calls.
"""
from __future__ import annotations

from dataclasses import dataclass

from configs.base import ConfigError, choice, nonneg, positive
from layers.mlp import KINDS as MLP_KINDS


@dataclass(frozen=True)
class HeadFields:
  """Multi-head attention: GQA/MQA, RoPE, softmax or sigmoid, QK-norm."""
  n_heads: int = positive(4)          # H
  n_kv_heads: int = nonneg(0)         # K (GQA/MQA); 0 means = n_heads
  d_head: int = nonneg(0)             # 0 means d_model // n_heads
  rope_theta: float = 10000.0
  attention: str = choice("softmax", ("softmax", "sigmoid"))
  sigmoid_bias: bool = True           # sigmoid's b = -log(max_len) (the paper's); false: b = 0
  qk_norm: bool = False               # QK-norm: q, k normalised per head (model.norm kind) before RoPE

  @property
  def head_dim(self) -> int:
    return self.d_head or self.d_model // self.n_heads

  @property
  def kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  def check_heads(self) -> None:
    if not self.d_head and self.d_model % self.n_heads:
      raise ConfigError(f"model.n_heads={self.n_heads} does not divide "
                        f"model.d_model={self.d_model}")
    if self.n_heads % self.kv_heads:
      raise ConfigError(f"model.n_kv_heads={self.kv_heads} does not divide "
                        f"model.n_heads={self.n_heads}")
    if self.pos == "rope" and self.head_dim % 2:
      raise ConfigError("RoPE needs an even head dimension")


@dataclass(frozen=True)
class MLPFields:
  """The feed-forward block (layers/mlp.py): GELU (GPT-2), SwiGLU (Llama), ReLU (+ Top-k), and
  PolyCom's PolyReLU / PolyNorm."""
  d_ff: int = positive(1024)          # F
  mlp: str = choice("gelu", MLP_KINDS)
  gelu_exact: bool = False            # erf GELU; the tanh form is much cheaper in the CPU backward
  mlp_topk: int = nonneg(0)           # relu: each token keeps its k largest activations; 0 = all

  def check_mlp(self) -> None:
    if self.mlp_topk and self.mlp != "relu":
      raise ConfigError(f"model.mlp_topk={self.mlp_topk} needs model.mlp=relu, not {self.mlp!r}")
    if self.mlp_topk > self.d_ff:
      raise ConfigError(f"model.mlp_topk={self.mlp_topk} is more than model.d_ff={self.d_ff}")
