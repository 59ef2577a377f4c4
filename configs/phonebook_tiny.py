"""Phonebook lookup (Repeat After Me, Jelassi et al. 2024; the Mamba-based LM study, Waleffe et al.
2024) at CPU scale: a width-64 Mamba-2 hybrid looks a name up in a 4-entry book (data/tasks.py).

    python train.py --config configs/phonebook_tiny.py --workdir runs/phonebook_tiny
    python train.py --config configs/phonebook_tiny.py --workdir runs/phonebook_tf model.layer_pattern=*-*-*-*- model.n_layers=8 model.d_ff=320 model.pos=rope
    python train.py --config configs/phonebook_tiny.py --workdir runs/phonebook_m2 model.layer_pattern= model.n_layers=7

The book is 4 entries "name SEP number" (1-token names from 30, 2-token numbers from 31 tokens,
vocabulary 64), then "QUERY name SEP" and the 2 answer tokens: 20 tokens, loss and accuracy on the
answers only. Models (jax.eval_shape): this hybrid "M-M*-M-" (3 Mamba-2 mixers, 1 attention
layer without position embedding, 3 MLPs) 218,376 parameters; the transformer of the second
command (4 x attention with RoPE + MLP) 217,664; the pure Mamba-2 of the third (7 mixers) 216,680.
configs/repro_mamba2_hybrid.py runs all three.
Should show: eval_accuracy in metrics.jsonl leaving chance (1/31) and eval_seq_accuracy (both
answer tokens right) rising. Measured on 2 busy cores (load 8-12, 2026-12-07): this hybrid 0.08
eval accuracy (seq 0.006) after 1000 steps (~6 min with a 94 s compile); the transformer 0.30
(seq 0.06) at 1000 steps and 0.39 (seq 0.12) at 3000 (~6.5 min), still rising. 0.25 is a model
naming one of the book's 4 numbers without matching the name; that plateau is where the
transformer spends its first ~1000 steps; solving the lookup needs more steps than a few CPU
minutes give (lr 1e-2 was worse: 0.10 at 1000 steps).
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.mamba2.config import Mamba2Config

V = 64


def get_config() -> Config:
  return Config(
      model=Mamba2Config(layer_pattern="M-M*-M-", n_layers=7, vocab_size=V, d_model=64,
                         n_heads=4, n_kv_heads=2, d_ff=288, mlp="gelu", d_state=32, d_conv=4,
                         expand=2, ssm_head_dim=16, ssm_groups=1, ssm_chunk=32, norm="rmsnorm",
                         norm_bias=False, pos="none", use_bias=False, tie_embeddings=True,
                         max_len=20),
      data=DataConfig(source="phonebook", vocab_size=V, num_entries=4, name_len=1, number_len=2,
                      seq_len=20),
      train=TrainConfig(steps=1000, batch_size=64, lr=3e-3, min_lr=3e-4, warmup_steps=100,
                        b2=0.99, weight_decay=0.0, log_every=20, eval_every=100, eval_steps=8),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
