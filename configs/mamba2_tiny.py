"""A tiny byte-level pure Mamba-2 (4 SSD mixers, no MLP) on the CPython standard library.

    python train.py --config configs/mamba2_tiny.py --workdir runs/mamba2_tiny
    python eval.py --workdir runs/mamba2_tiny --sample "def " --max-new-tokens 100

Should show: the loss falling from ~5.5 (ln 256) to about 1.5 nats/byte in 300 steps
(docs/mamba.md), then eval.py reporting the validation loss / bits per byte and a sample decoded
with the recurrent cache (conv state + SSM state per layer). The hybrid counterpart is
configs/mamba2_hybrid_tiny.py; see docs/mamba.md.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.mamba2.config import Mamba2Config


def get_config() -> Config:
  return Config(
      model=Mamba2Config(vocab_size=256, d_model=128, n_layers=4, d_state=32, d_conv=4,
                         expand=2, ssm_head_dim=32, ssm_groups=1, ssm_chunk=32, norm="rmsnorm",
                         norm_bias=False, pos="none", use_bias=False, tie_embeddings=True,
                         max_len=128),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=300, batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=30,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=100, eval_steps=8),
      ckpt=CheckpointConfig(every=100, keep=2),
  )
