"""Mamba-2-Hybrid 8B ("An Empirical Study of Mamba-based Language Models", Waleffe et al. 2024).

    python train.py --config configs/mamba2_hybrid_8b.py --workdir runs/mamba2_hybrid_8b data.source=tokens data.path=<corpus>.bin
    python train.py --config configs/mamba2_hybrid_8b.py --aot v5p:2x2x1

A paper-scale config (accelerators): on CPU it only builds (tests/test_zoo_mamba.py checks its
parameter count with jax.eval_shape against the paper's 8.66B). 56 layers from the pattern below:
24 Mamba-2 (43%), 4 attention (7%), 28 MLP (50%). From NVIDIA Megatron-LM examples/mamba
(run_text_gen_server_8b.sh, train.sh) and its Mamba defaults: hidden 4096; attention 32 heads,
GQA with 8 query groups, d_head 128, no position embedding; Mamba-2 state 128, head dim 64 (128
heads), 8 groups, expand 2, conv 4; MLP 4×hidden = 16384 with GELU (no --swiglu); RMSNorm; no
linear biases; untied embeddings; the 256K SentencePiece vocabulary (256000). Optimiser from
train.sh: lr 2.5e-4 -> 2.5e-5 cosine, wd 0.1, clip 1.0, β2 0.95, 4096-token sequences; the global
batch below (256 x 4096, 1M tokens) is a placeholder, not the paper's. `--aot v5p:2x2x1` (its
mesh.topology) compiles the step for a TPU v5p 2x2x1 slice, fsdp over the 4 chips, remat full, 32
micro-batches of 8 x 4096: 68.0 GiB per chip of 95, fits (docs/scale.md).
"""
from configs.base import Config, DataConfig, MeshConfig, TrainConfig
from modelzoo.mamba2.config import Mamba2Config

PATTERN = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"


def get_config() -> Config:
  return Config(
      model=Mamba2Config(layer_pattern=PATTERN, n_layers=len(PATTERN), vocab_size=256_000,
                         d_model=4096, n_heads=32, n_kv_heads=8, d_ff=16384, mlp="gelu",
                         gelu_exact=True, d_state=128, d_conv=4, expand=2, ssm_head_dim=64,
                         ssm_groups=8, ssm_chunk=128, norm="rmsnorm", norm_bias=False,
                         norm_eps=1e-5, pos="none", use_bias=False, tie_embeddings=False,
                         max_len=4096, dtype="bfloat16", remat="full"),
      data=DataConfig(source="tokens", tokenizer="bpe", seq_len=4096),
      train=TrainConfig(steps=100_000, batch_size=256, grad_accum=32, lr=2.5e-4, min_lr=2.5e-5,
                        warmup_steps=2000, b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0),
      mesh=MeshConfig(data=1, fsdp=-1, topology="v5p:2x2x1"),
  )
