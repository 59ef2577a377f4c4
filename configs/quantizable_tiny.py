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
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=128,
                       pos="rope"),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=400, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=40,
                        b2=0.99, weight_decay=0.1, log_every=10, eval_every=50, eval_steps=8,
                        log_outliers=True),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
