"""A tiny Mamba on induction heads (Mamba §4.1, data/tasks.py): 2 layers of width 64 trained at T = 32
recall the token that followed the special token, and are evaluated at 32x the length and more.

    python train.py --config configs/induction_tiny.py --workdir runs/induction_tiny
    python benchmarks/eval_lengths.py --workdir runs/induction_tiny --lengths 32 64 128 256 512 1024 --batches 4

Should show: eval_accuracy (one answer per sequence, chance 1/15) at chance for ~100 steps, then
1.0 by step 200; eval_lengths.py then reports accuracy 1.0 at every length up to 1024 (the selective
state keeps the token after the special one and ignores the rest, at any length) -- on most seeds:
train.seed=0, 2, 3 reach 1.0 by step 100-200 (at T = 2048: 1.0, 0.75, 0.97); seed 1 stays at chance
for the 400 steps (0.07) and, given 1000, leaves it at ~step 500 to reach 0.78 (0.81 at T = 2048)
(configs/repro_mamba.py's sweep and follow-up runs, 2026-12-07). Measured on the
2-core box shared with other jobs (load ~9), seed 0, 600 steps: eval_accuracy 0.09 at step 100,
1.0 at 200..600 (eval_loss 0.0006); eval_lengths.py at 32, 64, ..., 1024 (256 sequences each):
1.0 everywhere, eval_loss 0.001. ~2.9 steps/s (64 x 32 tokens) + ~20 s start-up; eval_lengths.py
~45 s. Batch 64 matters: at T = 64 with batch 32 (32 answers a step) the accuracy was still at
chance (0.08) after 600 steps; at T = 16, batch 64 it was 1.0 by step 200. The paper's setting:
data.seq_len=256 model.max_len=256 model.ssm_chunk=64, evaluated up to 2^20.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.mamba.config import MambaConfig


def get_config() -> Config:
  return Config(
      model=MambaConfig(vocab_size=16, d_model=64, n_layers=2, d_state=16, d_conv=4, expand=2,
                        ssm_chunk=32, norm="rmsnorm", norm_bias=False, pos="none",
                        use_bias=False, tie_embeddings=True, max_len=32),
      data=DataConfig(source="induction", vocab_size=16, seq_len=32),
      train=TrainConfig(steps=400, batch_size=64, lr=1e-2, min_lr=1e-3, warmup_steps=50,
                        b2=0.99, weight_decay=0.0, log_every=20, eval_every=100, eval_steps=8),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
