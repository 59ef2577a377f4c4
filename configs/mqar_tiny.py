"""A tiny decoder on MQAR (Zoology's multi-query associative recall, data/tasks.py): 2 layers learn
to look each queried key up among 8 key-value pairs (CPU, a few minutes).

    python train.py --config configs/mqar_tiny.py --workdir runs/mqar_tiny
    python eval.py --workdir runs/mqar_tiny

Should show: `accuracy` (argmax == the key's value, over the answer positions only) in
metrics.jsonl rising from chance (1/32: 32 values) to well above it, eval rows with eval_accuracy
and eval_seq_accuracy (all 8 answers of a sequence right); `python -c "from data import tasks;
print(tasks.describe())"` shows the layout. Vary data.num_pairs, data.seq_len, data.vocab_size
(model.vocab_size must be >= it) or the model (model.name=deltanet ...).
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_ff=256, max_len=64),
      data=DataConfig(source="mqar", vocab_size=64, num_pairs=8, seq_len=64, power_a=0.01),
      train=TrainConfig(steps=600, batch_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.0, log_every=20, eval_every=200, eval_steps=8),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
