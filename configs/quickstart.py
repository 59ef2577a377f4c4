"""The default job: a small byte-level GPT on the CPython standard library (present on every machine).

    python train.py --config configs/quickstart.py
    python eval.py --workdir runs/quickstart

Should show: the loss falling from ~5.5 (ln 256) to below ~2.0 nats/byte within a few minutes on 2 CPU
cores, then eval.py reporting the validation loss, perplexity and bits per byte.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=128),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=600, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=200, eval_steps=8),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
