"""FFN activations at matched parameters: GELU, SwiGLU, ReLU (+ Top-k), PolyReLU, PolyNorm (PolyCom,
Zhuo et al. 2024; the Lazy Neuron paper, Li et al. 2023). A byte-level 4-layer, width-128
decoder on the CPython standard library, fraction of non-zero FFN activations logged (CPU, minutes).

    python train.py --config configs/ffn_tiny.py --workdir runs/ffn_tiny                     # GELU
    python train.py --config configs/ffn_tiny.py --workdir runs/ffn_polynorm model.mlp=polynorm
    python train.py --config configs/ffn_tiny.py --workdir runs/ffn_relu model.mlp=relu

Should show: the loss falling from ~5.5 (ln 256) to about 2 nats/byte; `act_nonzero/<layer>` in
metrics.jsonl (about 1 for GELU and PolyNorm, below 0.5 and falling for ReLU). Matched
parameters: a two-matrix FFN of width 512 has the parameters of SwiGLU at width 341
(`model.mlp=swiglu model.d_ff=341`); PolyCom adds 4 scalars per layer. The comparisons:
configs/repro_polycom.py and configs/repro_lazy_neuron.py.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      model=gpt2_style(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=128,
                       pos="rope"),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=400, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=40,
                        b2=0.99, weight_decay=0.1, log_every=10, eval_every=50, eval_steps=8,
                        log_act_nonzero=True),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
