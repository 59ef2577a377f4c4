"""Tiny byte-level Dual-Stream Transformer, dense head mixing (the reference for the mixing variants).

    python train.py --config configs/dual_stream_tiny_dense.py --workdir runs/ds_tiny_dense
    python eval.py --workdir runs/ds_tiny_dense --logit-scale 1 2 4 8 16 --sample "def "

Should show: the loss falling from ~5.5 (ln 256) to ~1.8 (train) and an eval loss of ~1.61 nats/byte
after 500 steps (about 6 CPU-minutes: ~10 min wall on 2 idle cores, 50 min on the shared box at load
16); the amplification table rising to ~+18% at 16; samples at 16 keep Python's layout, words degrade.
4 layers, 4 heads, width 128, FFN 512, RoPE, CLN, tied, no biases, on the CPython standard library.
Variants: dual_stream_tiny_kronecker.py, dual_stream_tiny_independent.py (V/O per head),
dual_stream_tiny_fully_independent.py (V, O and the FFN per head: the paper's independent end); the
frozen-token-stream variant is `model.frozen_tokens=true`.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.dual_stream.config import DualStreamConfig


def get_config(**model_kw) -> Config:
  model = {"vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "d_ff": 512,
           "max_len": 128, "norm": "layernorm", "norm_bias": True, "pos": "rope",
           "tie_embeddings": True}
  return Config(
      model=DualStreamConfig(**{**model, **model_kw}),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=500, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                        b2=0.95, weight_decay=0.1, log_every=20, eval_every=250, eval_steps=8),
      ckpt=CheckpointConfig(every=250, keep=2),
  )
