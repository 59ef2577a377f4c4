"""A tiny transformer learning linear regression in context (Garg et al. 2022, "What Can Transformers
Learn In-Context?"; data/tasks.py's linear_regression): sequences (x_1, y_1, ..., x_n, y_n) with a fresh
w ~ N(0, I_d) per sequence, x_i ~ N(0, I_d), y_i = w.x_i, read in as rows of d+1 reals by a linear layer
(model.d_in = d + 1) and read out as a scalar; the loss is the squared error at every x_i (CPU, minutes).

    python train.py --config configs/icl_regression_tiny.py --workdir runs/icl_regression_tiny
    python eval.py --workdir runs/icl_regression_tiny

Should show: the loss (MSE, averaged over context lengths 0..n-1) falling below d = 2 (the zero
predictor's error E|w|^2), and in <workdir>/eval_regression.json (also eval.py's "regression") the
model's error per context length k falling with k, below the zero predictor's and towards least
squares (exact for k >= d), far below one step of gradient descent, beside ridge on the same val
draws. configs/repro_icl_regression.py runs it over 3 seeds (docs/RESULTS.md).
Measured 2026-12-07 on the 2 shared cores at load ~11, seed 0: 3000 steps in 5.1 min (start-up
and compile ~30 s included); eval_mse 1.38 at step 250, 0.83 at 1000, 0.49 at 3000 (zero
predictor ~1.93). Error at the query after k points, model / OLS / one GD step / zero, on the 8
val batches at step 3000: k=1 1.10 / 1.07 / 4.52 / 1.82, k=2 0.48 / 0 / 2.26 / 2.01, k=4 0.12 /
0 / 1.04 / 1.82, k=7 0.04 / 0 / 0.73 / 1.90.
Tuning (on the same busy box; batch 64, 3 layers as here): this file's former setting, d = 4,
n = 16, lr 1e-3, 1000 steps, stayed on the zero predictor's plateau until step ~500 and ended at
3.73 (zero 4.19, OLS 0.62); lr 3e-3 never left the plateau in 1500 steps at d = 4 and began to
only at step ~700 at d = 2 (1.75 at 1000). d = 3, n = 12, lr 1e-3, 2000 steps: error 1.4-1.8 for
k >= 4, about one GD step's (1.0-2.8) against OLS's 0: larger d needs many more steps (Garg et
al.: 500k, with a curriculum over d and n). Without gradient clipping (clip_norm=0) d = 2 was at
eval_mse 0.92 after 1000 steps, with clip_norm=1 at 1.00.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style

D, N = 2, 8       # input dimension d, points per sequence n (T = 2n interleaved)


def get_config() -> Config:
  return Config(
      model=gpt2_style(d_in=D + 1, d_model=64, n_layers=3, n_heads=2, d_ff=256, max_len=2 * N),
      data=DataConfig(source="linear_regression", d=D, n=N, seq_len=2 * N),
      train=TrainConfig(steps=3000, batch_size=64, lr=1e-3, min_lr=1e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.0, clip_norm=0.0, log_every=20, eval_every=250,
                        eval_steps=8),
      ckpt=CheckpointConfig(every=1000, keep=2),
  )
