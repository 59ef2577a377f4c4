"""Field groups several families' configs share: attention heads and the MLP.

A family's config (modelzoo/<family>/config.py) is a frozen dataclass that extends
configs.schema.ModelConfig with the groups it uses, listed before the base
(`class DecoderConfig(MLPFields, HeadFields, ModelConfig)`) so that the JSON keeps the base's
fields first. A group declares its fields, their derived values and a check_* method that the
family's check() calls.
"""
from __future__ import annotations

from dataclasses import dataclass

from configs.schema import ConfigError, choice, nonneg, positive
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
  # Quantizable Transformers (Bondarenko et al. 2023), softmax only: clipped softmax
  # clip((zeta - gamma) softmax + gamma, 0, 1) (gamma <= 0 <= zeta - 1; 0, 1 = plain softmax), and
  # gated attention sigmoid(G_h(x_h)) * head h's output, G_h linear on head h's slice of x.
  attn_clip_gamma: float = 0.0
  attn_clip_zeta: float = 1.0
  attn_gate: bool = False

  @property
  def head_dim(self) -> int:
    return self.d_head or self.d_model // self.n_heads

  @property
  def kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  @property
  def clipped(self) -> bool:
    return (self.attn_clip_gamma, self.attn_clip_zeta) != (0.0, 1.0)

  def check_heads(self) -> None:
    if not self.d_head and self.d_model % self.n_heads:
      raise ConfigError(f"model.n_heads={self.n_heads} does not divide "
                        f"model.d_model={self.d_model}")
    if self.n_heads % self.kv_heads:
      raise ConfigError(f"model.n_kv_heads={self.kv_heads} does not divide "
                        f"model.n_heads={self.n_heads}")
    if self.attn_clip_gamma > 0 or self.attn_clip_zeta < 1:
      raise ConfigError(f"model.attn_clip_gamma={self.attn_clip_gamma}, model.attn_clip_zeta="
                        f"{self.attn_clip_zeta}: the clipped softmax needs gamma <= 0 and zeta >= 1")
    if (self.clipped or self.attn_gate) and self.attention != "softmax":
      raise ConfigError("model.attn_clip_* and model.attn_gate apply to softmax attention, not "
                        f"model.attention={self.attention!r}")
    if self.attn_gate and self.d_model % self.n_heads:
      raise ConfigError(f"model.attn_gate reads head h's slice of x: model.n_heads={self.n_heads} "
                        f"must divide model.d_model={self.d_model}")
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
