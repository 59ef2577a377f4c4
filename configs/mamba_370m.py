"""Mamba 370M at the paper's size: d_model 1024, 48 layers; the recipe is configs/mamba_130m.py's.

    python train.py --config configs/mamba_370m.py --workdir runs/mamba_370m data.source=tokens data.path=<pile>.bin
    python train.py --config configs/mamba_370m.py --aot v5e:2x2

`--aot v5e:2x2` (its mesh.topology) compiles the step for a TPU v5e 2x2 slice, fsdp over the 4
chips, remat full, the paper's 0.5M-token batch as 8 micro-batches of 32 x 2048: 10.0 GiB per chip
of 16, fits (docs/scale.md).
"""
from configs import mamba_130m


def get_config():
  return mamba_130m.get_config("370m")
