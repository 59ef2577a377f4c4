"""Mamba at the paper's sizes (Gu & Dao 2023): the recipe and the size table. This file is 130M
(d_model 768, 24 layers); configs/mamba_{370m,790m,1_4b,2_8b}.py pick the other sizes.

    python train.py --config configs/mamba_130m.py --workdir runs/mamba_130m data.source=tokens data.path=<pile>.bin
    python train.py --config configs/mamba_130m.py --aot v5e:2x2

A paper-scale config (accelerators): on CPU it only builds (tests/test_zoo_mamba.py checks each
size's parameter count against the paper's with jax.eval_shape). N=16, expand 2, tied embeddings.
Vocabulary: the GPT-NeoX tokenizer's 50277 padded to a multiple of 8 (50280), as
state-spaces/mamba's pad_vocab_size_multiple=8. Training: the paper's recipe as we read it (AdamW
β=(0.9, 0.95), wd 0.1, clip 1.0, 5× the GPT-3 learning rate, cosine to 1e-5, 2048-token sequences,
0.5M-token batches, 300B tokens); data must be pre-tokenized with that tokenizer
(data.tokenizer_path=<tokenizer.json> data.tokenizer=bpe). Each size names the slice it is sized
for (mesh.topology, fsdp over its chips): `--aot v5e:2x2` compiles 130M's step for a TPU v5e 2x2
slice, remat dots, the paper's 0.5M-token batch as 8 micro-batches of 32 x 2048: 8.9 GiB per chip
of 16, fits (docs/scale.md).
"""
from configs.base import Config, DataConfig, MeshConfig, TrainConfig
from modelzoo.mamba.config import MambaConfig

# size: (d_model, n_layers, peak lr, and what fits the slice: remat, grad_accum, mesh.topology)
SIZES = {
    "130m": (768, 24, 3e-3, "dots", 8, "v5e:2x2"),
    "370m": (1024, 48, 1.5e-3, "full", 8, "v5e:2x2"),
    "790m": (1536, 48, 1.25e-3, "full", 16, "v5e:2x2"),
    "1_4b": (2048, 48, 1e-3, "full", 32, "v5e:2x2"),
    "2_8b": (2560, 64, 8e-4, "full", 32, "v5e:2x4"),
}


def get_config(size: str = "130m") -> Config:
  d_model, n_layers, lr, remat, grad_accum, topology = SIZES[size]
  return Config(
      model=MambaConfig(vocab_size=50280, d_model=d_model, n_layers=n_layers, d_state=16,
                        d_conv=4, expand=2, dt_rank=0, ssm_chunk=64, norm="rmsnorm",
                        norm_bias=False, norm_eps=1e-5, pos="none", use_bias=False,
                        tie_embeddings=True, max_len=2048, dtype="bfloat16", remat=remat),
      data=DataConfig(source="tokens", tokenizer="bpe", seq_len=2048),
      train=TrainConfig(steps=572_205, batch_size=256, grad_accum=grad_accum, lr=lr,
                        min_lr=1e-5, warmup_steps=2000, b1=0.9, b2=0.95, weight_decay=0.1,
                        clip_norm=1.0),
      mesh=MeshConfig(data=1, fsdp=-1, topology=topology),
  )
