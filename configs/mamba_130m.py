"""Mamba 130M at the paper's size (Gu & Dao 2023): d_model 768, 24 layers, N=16, expand 2, tied.

    python train.py --config configs/mamba_130m.py --workdir runs/mamba_130m data.source=tokens data.path=<pile>.bin
    python train.py --config configs/mamba_130m.py --aot v5e:2x2

A paper-scale config (accelerators): on CPU it only builds (tests/test_zoo_mamba.py checks its
parameter count against the paper's 130M with jax.eval_shape). Vocabulary: the GPT-NeoX tokenizer's
50277 padded to a multiple of 8 (50280), as state-spaces/mamba's pad_vocab_size_multiple=8. Training:
the paper's recipe as we read it (AdamW β=(0.9, 0.95), wd 0.1, clip 1.0, 5× the GPT-3 learning rate,
cosine to 1e-5, 2048-token sequences, 0.5M-token batches, 300B tokens); data must be pre-tokenized
with that tokenizer (data.tokenizer_path=<tokenizer.json> data.tokenizer=bpe).
`--aot v5e:2x2` (its mesh.topology) compiles the step for a TPU v5e 2x2 slice, fsdp over the 4
chips, remat dots, the paper's 0.5M-token batch as 8 micro-batches of 32 x 2048: 8.9 GiB per chip of
16, fits (docs/scale.md).
"""
from configs.base import Config, DataConfig, MeshConfig, ModelConfig, TrainConfig


def get_config() -> Config:
  return Config(
      model=ModelConfig(name="mamba", vocab_size=50280, d_model=768, n_layers=24, d_state=16,
                        d_conv=4, expand=2, dt_rank=0, ssm_chunk=64, norm="rmsnorm",
                        norm_bias=False, norm_eps=1e-5, pos="none", use_bias=False,
                        tie_embeddings=True, max_len=2048, dtype="bfloat16", remat="dots"),
      data=DataConfig(source="tokens", tokenizer="bpe", seq_len=2048),
      train=TrainConfig(steps=572_205, batch_size=256, grad_accum=8, lr=3e-3, min_lr=1e-5,
                        warmup_steps=2000, b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0),
      mesh=MeshConfig(data=1, fsdp=-1, topology="v5e:2x2"),
  )
