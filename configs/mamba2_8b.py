"""Pure Mamba-2 8B, the baseline of "An Empirical Study of Mamba-based Language Models".

    python train.py --config configs/mamba2_8b.py --workdir runs/mamba2_8b data.source=tokens data.path=<corpus>.bin
    python train.py --config configs/mamba2_8b.py --aot v5p:2x2x1

A paper-scale config (accelerators): on CPU it only builds (tests/test_zoo_mamba.py checks its
parameter count with jax.eval_shape against the paper's 8.24B). 56 Mamba-2 layers and nothing
else (Megatron-LM examples/mamba: "change --hybrid-layer-pattern to use only M symbols (e.g., 56
Ms for the 8B model)"); every other setting as configs/mamba2_hybrid_8b.py, including its slice:
`--aot v5p:2x2x1` compiles the step for a TPU v5p 2x2x1 slice, fsdp over the 4 chips, remat full,
32 micro-batches of 8 x 4096: 70.6 GiB per chip of 95, fits (docs/scale.md).
"""
import dataclasses

from configs.base import Config
from configs.mamba2_hybrid_8b import get_config as hybrid_config


def get_config() -> Config:
  cfg = hybrid_config()
  return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, layer_pattern="",
                                                            n_layers=56))
