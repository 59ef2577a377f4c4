"""DeltaNet + two global-attention layers, 1.3B (the paper's second hybrid).

    python train.py --config configs/deltanet_1p3b_global.py data.path=<text files> --workdir runs/x
    python train.py --config configs/deltanet_1p3b_global.py --aot v5e:2x2

Should show: nothing on CPU (1.37B parameters; built by tests/test_zoo_deltanet.py). Layers 2 and
L/2 + 1 = 13 (1-based; the H3 placement) are global softmax attention with RoPE, 16 heads of 128;
the other 22 are DeltaNet; every other setting as configs/deltanet_1p3b.py but for 32 micro-batches
of 8 x 2048 instead of 16 (at 16 the compiler plans 14.2 GiB per chip, 11% free: too close):
11.7 GiB per chip of 16 on `--aot v5e:2x2`, fits (docs/scale.md).
"""
import dataclasses

from configs import deltanet_1p3b
from configs.base import Config


def get_config() -> Config:
  cfg = deltanet_1p3b.get_config(dn_hybrid="global")
  return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad_accum=32))
