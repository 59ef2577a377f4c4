"""Mamba 1.4B at the paper's size: d_model 2048, 48 layers; the recipe is configs/mamba_130m.py's.

    python train.py --config configs/mamba_1_4b.py --workdir runs/mamba_1_4b data.source=tokens data.path=<pile>.bin
    python train.py --config configs/mamba_1_4b.py --aot v5e:2x2

`--aot v5e:2x2` (its mesh.topology) compiles the step for a TPU v5e 2x2 slice, fsdp over the 4
chips, remat full, the paper's 0.5M-token batch as 32 micro-batches of 8 x 2048: 12.1 GiB per chip
of 16, fits (docs/scale.md).
"""
from configs import mamba_130m


def get_config():
  return mamba_130m.get_config("1_4b")
