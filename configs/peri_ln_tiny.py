"""Peri-LN (Kim et al. 2025): where the norms go. A byte-level 8-layer, width-128 decoder on the
CPython standard library with the hidden-state RMS of every layer logged (CPU, minutes).

    python train.py --config configs/peri_ln_tiny.py --workdir runs/peri_ln_tiny
    python train.py --config configs/peri_ln_tiny.py --workdir runs/pre_ln_tiny model.norm_placement=pre

Should show: the loss falling from ~5.5 (ln 256); in metrics.jsonl `hidden_rms/0` ... `hidden_rms/7`
(each block's output RMS): with pre-norm it grows with depth (every block adds an unnormalised
update to the residual stream), with peri-norm (x + Norm(f(Norm(x)))) it stays flat. The
comparison over norm placements, learning rates and seeds: configs/repro_peri_ln.py.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=256, d_model=128, n_layers=8, n_heads=4, d_ff=512, max_len=128,
                       pos="rope", norm_placement="peri"),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=300, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=30,
                        b2=0.99, weight_decay=0.1, log_every=10, eval_every=50, eval_steps=8,
                        log_hidden_rms=True),
      ckpt=CheckpointConfig(every=150, keep=2),
  )
