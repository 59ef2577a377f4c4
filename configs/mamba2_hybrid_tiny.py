"""A tiny byte-level Mamba-2 hybrid from a layer pattern on the CPython standard library.

    python train.py --config configs/mamba2_hybrid_tiny.py --workdir runs/mamba2_hybrid_tiny
    python eval.py --workdir runs/mamba2_hybrid_tiny --sample "def " --max-new-tokens 100

Pattern "M-M*-M-": 3 Mamba-2 mixers, 1 GQA attention layer (no position embedding, as the paper's
hybrid), 3 MLPs, roughly the paper's 43/7/50 mix at 7 layers. Should show: the loss falling from
~5.5 (ln 256) to about 1.5 nats/byte in 300 steps (docs/mamba.md), then eval.py reporting the
validation loss / bits per byte and a sample decoded with the caches (KV cache for attention, conv +
SSM state for the mixers).
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig
from modelzoo.mamba2.config import Mamba2Config


def get_config() -> Config:
  return Config(
      model=Mamba2Config(layer_pattern="M-M*-M-", n_layers=7, vocab_size=256, d_model=128,
                         n_heads=4, n_kv_heads=2, d_ff=512, mlp="gelu", d_state=32, d_conv=4,
                         expand=2, ssm_head_dim=32, ssm_groups=1, ssm_chunk=32, norm="rmsnorm",
                         norm_bias=False, pos="none", use_bias=False, tie_embeddings=True,
                         max_len=128),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=300, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=30,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=100, eval_steps=8),
      ckpt=CheckpointConfig(every=100, keep=2),
  )
