"""A tiny decoder on MQAR (Zoology's multi-query associative recall, data/tasks.py): 2 layers with RoPE
look each of 4 queried keys up among 4 key-value pairs in 32 tokens (CPU, about 2 minutes).

    python train.py --config configs/mqar_tiny.py --workdir runs/mqar_tiny
    python eval.py --workdir runs/mqar_tiny

Should show: `accuracy` (argmax == the key's value, over the answer positions only) in
metrics.jsonl sitting at the 1/N plateau (~0.25: the model names one of the 4 values in context
but not which) for ~300 steps, then the lookup forming (an induction circuit: previous-token head,
then key match) and eval_accuracy -> 1 by ~500 steps, with eval_seq_accuracy (all 4 answers of a
sequence right) following. Measured 2026-12-07 on the 2-core box shared with other jobs (load
~11, ~7 steps/s, 600 steps in ~2 min): eval_accuracy 0.26 / 0.27 / 0.37 / 0.88 / 0.991 / 0.999 at
steps 100-600 (eval_seq_accuracy 0.996 at 600).

What made it learnable: the init. With GPT-2's init_std 0.02 (sized for width 768) the attention
logits of a width-64 model start ~0 and their gradients tiny; the same model stayed on the
plateau for 1500 steps (eval_accuracy 0.27 at 1500 with lr 3e-3, wd 0.1; 0.25 at 1000 with 4
heads, lr 3e-3; lr 1e-2 or learned positions no better by 400). init_std 0.1 (~1/sqrt(64), near
PyTorch's default, which Zoology trains with) leaves the plateau at ~300 steps. Optimizer as in
Zoology's sweeps: AdamW, weight decay 0.1, warmup, cosine (lr 3e-3 here).

`python -c "from data import tasks; print(tasks.describe())"` shows the layout. Vary
data.num_pairs, data.seq_len (<= model.max_len with learned positions), data.vocab_size
(model.vocab_size must be >= it) or the model (model.name=deltanet model.pos=none ..., as in
configs/repro_deltanet.py).
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=64, d_model=64, n_layers=2, n_heads=2, d_ff=256, max_len=32,
                       pos="rope", init_std=0.1),
      data=DataConfig(source="mqar", vocab_size=64, num_pairs=4, seq_len=32),
      train=TrainConfig(steps=600, batch_size=64, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=100, eval_steps=8),
      ckpt=CheckpointConfig(every=300, keep=2),
  )
