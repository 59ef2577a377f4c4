"""A tiny decoder on MQAR (Zoology's multi-query associative recall, data/tasks.py): 2 layers with RoPE
look each of 4 queried keys up among 4 key-value pairs in 32 tokens (CPU, a few minutes).

    python train.py --config configs/mqar_tiny.py --workdir runs/mqar_tiny
    python eval.py --workdir runs/mqar_tiny

Should show: `accuracy` (argmax == the key's value, over the answer positions only) in
metrics.jsonl leaving chance (1/64: 64 values) within ~100 steps, and eval rows with eval_accuracy
and eval_seq_accuracy (all 4 answers of a sequence right). Measured on 2 busy cores, 1000 steps
with 2 heads: eval_accuracy 0.22 at step 250, 0.25 at 1000 (eval_seq_accuracy 0): the model names
one of the 4 values in context (1/4) but has not yet learned which; the lookup itself (accuracy
-> 1) needs the longer runs of Zoology's sweeps (more steps, an lr sweep). `python -c "from data
import tasks; print(tasks.describe())"` shows the layout. Vary data.num_pairs, data.seq_len,
data.vocab_size (model.vocab_size must be >= it) or the model (model.name=deltanet ...).
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=128, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_len=32,
                       pos="rope"),
      data=DataConfig(source="mqar", vocab_size=128, num_pairs=4, seq_len=32),
      train=TrainConfig(steps=1000, batch_size=64, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.0, log_every=20, eval_every=250, eval_steps=8),
      ckpt=CheckpointConfig(every=250, keep=2),
  )
