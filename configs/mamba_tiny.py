"""A tiny byte-level Mamba (selective SSM) on the CPython standard library: trains on 2 CPU cores.

    python train.py --config configs/mamba_tiny.py --workdir runs/mamba_tiny
    python eval.py --workdir runs/mamba_tiny --sample "def " --max-new-tokens 100

Should show: the loss falling from ~5.5 (ln 256) to about 1.5 nats/byte in 300 steps (measured:
docs/mamba.md), then eval.py reporting the validation loss / bits per byte and a sample decoded with
the recurrent cache (conv state + SSM state per layer, one token at a time). See docs/mamba.md for a
measured run.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.mamba.config import MambaConfig


def get_config() -> Config:
  return Config(
      model=MambaConfig(vocab_size=256, d_model=128, n_layers=4, d_state=16, d_conv=4, expand=2,
                        ssm_chunk=64, norm="rmsnorm", norm_bias=False, pos="none",
                        use_bias=False, tie_embeddings=True, max_len=128),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=300, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=30,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=100, eval_steps=8),
      ckpt=CheckpointConfig(every=100, keep=2),
  )
