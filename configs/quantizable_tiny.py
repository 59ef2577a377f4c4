"""Quantizable Transformers (Bondarenko et al. 2023): outliers in a byte-level 4-layer, width-128
decoder on the CPython standard library, with max |.| and kurtosis of every FFN output and block
output logged, and the loss under 8-bit weights and activations at eval (CPU, minutes).

    python train.py --config configs/quantizable_tiny.py --workdir runs/quant_vanilla
    python train.py --config configs/quantizable_tiny.py --workdir runs/quant_clipped model.attn_clip_gamma=-0.03
    python train.py --config configs/quantizable_tiny.py --workdir runs/quant_gated model.attn_gate=true
    python eval.py --workdir runs/quant_vanilla --quant w8a8

Should show: the loss falling from ~5.5 (ln 256); `ffn_maxabs/<layer>`, `resid_kurtosis/<layer>` ...
in metrics.jsonl, and eval.py's "w8a8" row with its rel_loss_increase. The paper: clipped softmax
(gamma = -alpha/T) and gated attention let heads "do nothing" without pushing outliers into the
residual stream, so outliers shrink and the W8A8 loss increase too. The comparison:
configs/repro_quantizable.py.
"""
import dataclasses

from configs import ffn_tiny
from configs.base import Config


def get_config() -> Config:
  """configs/ffn_tiny.py (GELU FFN) with the outlier statistics logged."""
  cfg = ffn_tiny.get_config()
  return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, log_act_nonzero=False,
                                                            log_outliers=True))
