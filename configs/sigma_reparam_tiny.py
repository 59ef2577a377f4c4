"""σReparam (Zhai et al. 2023) against attention entropy collapse: a byte-level 2-layer, width-128
pre-norm decoder on the CPython standard library trained at lr 1e-2 without warmup, with every
head's attention entropy logged (CPU, minutes).

    python train.py --config configs/sigma_reparam_tiny.py --workdir runs/sr_base
    python train.py --config configs/sigma_reparam_tiny.py --workdir runs/sr_on model.sigma_reparam=true

Should show: `attn_entropy/<layer>/<head>` in metrics.jsonl (nats; ln 128 = 4.85 for uniform
attention over 128 keys): the paper reports that at high learning rates without warmup the
baseline's heads collapse towards 0 with loss spikes or divergence, while with σReparam (every
projection gamma / sigma(W) * W) the entropy stays up and training converges. Diverging updates
are skipped, not fatal (train.max_bad_steps=300), so a failing run still ends and shows it.
The comparison: configs/repro_sigma_reparam.py.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=256, d_model=128, n_layers=2, n_heads=4, d_ff=512, max_len=128,
                       pos="rope"),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=300, batch_size=16, lr=1e-2, min_lr=1e-3, warmup_steps=0,
                        b2=0.99, weight_decay=0.1, log_every=10, eval_every=50, eval_steps=8,
                        log_attn_entropy=True, max_bad_steps=300),
      ckpt=CheckpointConfig(every=150, keep=2),
  )
