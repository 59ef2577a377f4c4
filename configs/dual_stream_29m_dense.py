"""Dual-Stream Transformer, the paper's ~29M model with dense head mixing (the reference baseline).

    python train.py --config configs/dual_stream_29m_dense.py data.tokenizer_path=<GPT-2 tokenizer.json>
    python eval.py --workdir <workdir> --logit-scale 1 2 4 8 16 --sample "The "
    python train.py --config configs/dual_stream_29m_dense.py --aot v5e:2x2

Should show: "model dual_stream: 29,930,112 parameters" at start-up (paper: "29M"), then the loss
falling. Sized for an accelerator: on this CPU one step takes seconds. The paper's shape (inferred
from its 29M count, docs/dual_stream.md): 6 layers, 6 heads, width 384, FFN 1536, GPT-2 BPE vocab
50257, tied, no biases, RoPE, CLN.
Without data.tokenizer_path a 50257-token byte-level BPE is trained on the corpus instead of GPT-2's.
Dataset, sequence length, lr and token budget are not known from the paper: the values below are
our assumptions (AdamW (0.9, 0.95), wd 0.1, clip 1.0, warm-up + cosine are stated).
Siblings: dual_stream_29m_kronecker.py (28.2M), dual_stream_29m_independent.py (28.5M),
dual_stream_29m_fully_independent.py (22.56M).
`--aot v5e:2x2` (its mesh.topology) compiles the step for a TPU v5e 2x2 slice, data parallel over
the 4 chips, float32, no remat, one batch of 64 x 256: 3.4 GiB per chip of 16, fits (docs/scale.md).
"""
from configs.base import CheckpointConfig, Config, DataConfig, MeshConfig, TrainConfig
from modelzoo.dual_stream.config import DualStreamConfig


def model(**kw) -> DualStreamConfig:
  base = {"vocab_size": 50257, "d_model": 384, "n_layers": 6, "n_heads": 6, "d_ff": 1536,
          "max_len": 256, "norm": "layernorm", "norm_bias": True, "pos": "rope",
          "tie_embeddings": True, "mix_v": "dense", "mix_o": "dense", "mix_up": "dense",
          "mix_down": "dense", "cln": True, "v_norm": True}
  return DualStreamConfig(**{**base, **kw})


def get_config(**model_kw) -> Config:
  return Config(
      model=model(**model_kw),
      data=DataConfig(source="stdlib", tokenizer="bpe", bpe_vocab_size=50257, seq_len=256),
      train=TrainConfig(steps=20000, batch_size=64, lr=6e-4, min_lr=6e-5, warmup_steps=1000,
                        b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0, log_every=50,
                        eval_every=1000, eval_steps=20),
      mesh=MeshConfig(topology="v5e:2x2"),
      ckpt=CheckpointConfig(every=1000, keep=3),
  )
