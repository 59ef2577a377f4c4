"""A tiny transformer learning linear regression in context (Garg et al. 2022, "What Can Transformers
Learn In-Context?"; data/tasks.py's linear_regression): sequences (x_1, y_1, ..., x_n, y_n) with a fresh
w ~ N(0, I_d) per sequence, x_i ~ N(0, I_d), y_i = w.x_i, read in as rows of d+1 reals by a linear layer
(model.d_in = d + 1) and read out as a scalar; the loss is the squared error at every x_i (CPU, minutes).

    python train.py --config configs/icl_regression_tiny.py --workdir runs/icl_regression_tiny
    python eval.py --workdir runs/icl_regression_tiny

Should show: the loss (MSE, averaged over context lengths 0..n-1) falling below d = 4 (the zero
predictor's error E|w|^2), and in <workdir>/eval_regression.json (also eval.py's "regression") the
model's error per context length k falling with k, below the zero predictor's and towards least
squares (exact for k >= d), beside ridge and one step of gradient descent on the same val draws.
Measured on 2 busy cores (~4 min): eval_mse 4.19 (= the zero predictor) until step ~500, 3.73 at
1000 against zero 4.19, OLS 0.62, ridge 0.69: it has only begun to leave the plateau; Garg et al.
train far longer (and with a curriculum over d and n), so raise train.steps to see it reach OLS.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style

D, N = 4, 16      # input dimension d, points per sequence n (T = 2n interleaved)


def get_config() -> Config:
  return Config(
      model=gpt2_style(d_in=D + 1, d_model=64, n_layers=3, n_heads=2, d_ff=256, max_len=2 * N),
      data=DataConfig(source="linear_regression", d=D, n=N, seq_len=2 * N),
      train=TrainConfig(steps=1000, batch_size=64, lr=1e-3, min_lr=1e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.0, log_every=20, eval_every=250, eval_steps=8),
      ckpt=CheckpointConfig(every=250, keep=2),
  )
