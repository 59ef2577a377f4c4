"""Mamba 2.8B at the paper's size: d_model 2560, 64 layers; the recipe is configs/mamba_130m.py's.

    python train.py --config configs/mamba_2_8b.py --workdir runs/mamba_2_8b data.source=tokens data.path=<pile>.bin
    python train.py --config configs/mamba_2_8b.py --aot v5e:2x4

`--aot v5e:2x4` (its mesh.topology) compiles the step for a TPU v5e 2x4 slice, fsdp over the 8
chips, remat full, the paper's 0.5M-token batch as 32 micro-batches of 8 x 2048: 13.3 GiB per chip
of 16, fits (docs/scale.md).
"""
from configs import mamba_130m


def get_config():
  return mamba_130m.get_config("2_8b")
