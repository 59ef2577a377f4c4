"""A small byte-level DeltaNet LM on the CPython standard library (CPU, a few minutes).

    python train.py --config configs/deltanet_tiny.py --workdir runs/deltanet_tiny
    python eval.py --workdir runs/deltanet_tiny --sample "def " --max-new-tokens 100

Should show: the loss falling from ~5.5 (ln 256) to about 2 nats/byte in 600 steps; eval.py samples
through the recurrent decode (conv inputs + delta state per layer). Variants by override:
model.dn_decay=true model.dn_gate=true (Gated DeltaNet), model.dn_hybrid=swa model.dn_window=32 or
model.dn_hybrid=global (the paper's two hybrids).
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, llama_style


def get_config() -> Config:
  return Config(
      model=llama_style(name="deltanet", vocab_size=256, d_model=128, n_layers=4, n_heads=4,
                        d_ff=384, max_len=128, pos="rope", tie_embeddings=True, dn_chunk=64),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=600, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=200, eval_steps=8),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
