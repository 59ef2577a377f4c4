"""A tiny Mamba on selective copying (Mamba §4.1, data/tasks.py): 2 layers of width 64 copy the 4 data
tokens scattered among 28 noise tokens, in order, at the 4 markers that end a 32-token sequence.

    python train.py --config configs/selective_copy_tiny.py --workdir runs/selective_copy_tiny
    python train.py --config configs/selective_copy_tiny.py --workdir runs/selective_copy_lti model.ssm_selective=false

Should show: eval_accuracy (argmax == the data token, over the 4 answer positions; chance 1/14)
near chance for ~200 steps, then rising to ~0.99 by step 1000, eval_seq_accuracy (all 4 right)
~0.95 -- on SOME seeds only: train.seed=0 and 3 solve it (0.985, 1.0 at step 1000); seeds 1 and 2
stay at the unigram loss (ln 14 = 2.64, accuracy 0.08, 0.07) for all 1000 steps, and seed 1 still
does at 2000 (0.066): a stuck start, not a slow one (configs/repro_mamba.py's sweep and follow-up
runs, 2026-12-07). The LTI ablation (model.ssm_selective=false: Δ, B, C parameters, not functions
of the input) learned it on both seeds it ran (0.865, 0.937 at step 1000; on seed 0 behind the
selective model: 0.51 vs 0.58 at step 400, 0.74 vs 0.88 at 600).
Speed, measured on the 2-core box shared with other jobs (load ~9): 1000 steps in ~4 min (~4.3
steps/s + ~20 s start-up); the LTI ablation ~2x slower per step (2.2 steps/s: its scan runs over
E*N = 2048 scalar channels). Seed 0's curve: eval_accuracy 0.17 at step 200, 0.58 at 400, 0.88 at
600, 0.97 at 800, 0.985 at 1000 (eval_seq_accuracy 0.945). Why T = 32: at T = 64 with batch 16 the
selective model stayed at chance (0.11) after 1000 steps. The paper's setting (16 tokens among
4096, 400K steps): data.seq_len=4096 data.num_tokens=16 model.max_len=4096 model.ssm_chunk=64.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.mamba.config import MambaConfig


def get_config() -> Config:
  return Config(
      model=MambaConfig(vocab_size=16, d_model=64, n_layers=2, d_state=16, d_conv=4, expand=2,
                        ssm_chunk=32, norm="rmsnorm", norm_bias=False, pos="none",
                        use_bias=False, tie_embeddings=True, max_len=32),
      data=DataConfig(source="selective_copy", vocab_size=16, num_tokens=4, seq_len=32),
      train=TrainConfig(steps=1000, batch_size=32, lr=1e-2, min_lr=1e-3, warmup_steps=50,
                        b2=0.99, weight_decay=0.0, log_every=20, eval_every=200, eval_steps=8),
      ckpt=CheckpointConfig(every=500, keep=2),
  )
