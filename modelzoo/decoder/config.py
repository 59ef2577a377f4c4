"""The decoder's config: GPT-2 style, Llama style (configs.base.gpt2_style / llama_style), and
sigmoid attention with the paper's stabilisers."""
from __future__ import annotations

from dataclasses import dataclass, field

from configs.schema import ConfigError, ModelConfig, choice, nonneg
from modelzoo.config import HeadFields, MLPFields


@dataclass(frozen=True)
class DecoderConfig(MLPFields, HeadFields, ModelConfig):
  name: str = field(default="decoder", init=False)
  use_bias: bool = True               # biases on the attention and MLP projections
  # crmsnorm (Pre-CRMSNorm, Jiang et al. 2023): the residual stream is zero-mean and stored as its
  # first D - 1 coordinates (layers/norm.py); interop/norm_convert.py turns a Pre-LN run into one.
  norm: str = choice("layernorm", ("layernorm", "rmsnorm", "crmsnorm"))
  head_bias: bool = False             # a bias on the head (where a converted final norm's beta goes)
  # pre: x + f(Norm(x)); post: Norm(x + f(x)); peri: x + Norm(f(Norm(x))) (Peri-LN, the sigmoid
  # paper's hybrid-norm): layers/block.py
  norm_placement: str = choice("pre", ("pre", "post", "peri"))
  # Operands of the matmuls (projections, attention kernel, MLP, head), accumulated in float32
  # whatever it is; "" = dtype. bfloat16 with float32 activations is TPU's default matmul
  # precision, and on CPUs with AMX/AVX512-BF16 runs the dots ~3x faster than float32
  # (docs/shakespeare_char.md).
  matmul_dtype: str = choice("", ("", "float32", "bfloat16"))
  # Sigmoid attention's stabiliser (Ramapuram et al. 2024), pre or peri; its hybrid-norm is peri:
  layer_scale: float = 0.0            # LayerScale: branch * per-channel gamma, this init; 0 = off
  # σReparam (Zhai et al. 2023): every attention and MLP projection uses gamma / sigma(W) * W
  sigma_reparam: bool = False
  # Real-valued inputs of this width (data.source=linear_regression: data.d + 1) through a linear
  # read-in in place of the embedding, and a scalar read-out in place of the head; 0 = token ids.
  d_in: int = nonneg(0)

  @property
  def d_stream(self) -> int:
    return self.d_model - (self.norm == "crmsnorm")

  @property
  def dot_dtype(self) -> str:
    return self.matmul_dtype or self.dtype

  def check(self) -> None:
    super().check()
    self.check_heads()
    self.check_mlp()
    if self.layer_scale and self.norm_placement == "post":
      raise ConfigError("model.layer_scale needs model.norm_placement=pre or peri, not post")
    if self.head_bias and self.tie_embeddings:
      raise ConfigError("model.head_bias needs an untied head: model.tie_embeddings=false")
    if self.norm == "crmsnorm":
      bad = {k: getattr(self, k) for k, ok in (("norm_placement", "pre"), ("qk_norm", False),
                                               ("attn_gate", False), ("d_in", 0))
             if getattr(self, k) != ok}
      if bad:
        raise ConfigError("model.norm=crmsnorm keeps a compressed pre-norm residual stream; it "
                          "does not take " + ", ".join(f"model.{k}={v!r}" for k, v in bad.items()))
