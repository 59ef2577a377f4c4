"""A small byte-level sigmoid-attention LM on the CPython standard library (CPU, a few minutes).

    python train.py --config configs/sigmoid_tiny.py --workdir runs/sigmoid_tiny
    python eval.py --workdir runs/sigmoid_tiny --sample "def " --max-new-tokens 100

Should show: the loss falling from ~5.5 (ln 256) to about 2 nats/byte in 600 steps, like
configs/quickstart.py with softmax attention. Attention is sigmoid(q.k/sqrt(d) - log 128) with the
paper's stabilisers: QK-norm and hybrid-norm (x + Norm(f(Norm(x))), used by Apple's 7B sigmoid run:
model.norm_placement=peri);
add model.layer_scale=1e-4 for LayerScale, or model.attention=softmax for the baseline.
"""
from configs.base import CheckpointConfig, Config, DataConfig, TrainConfig, llama_style


def get_config() -> Config:
  return Config(
      model=llama_style(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=384, max_len=128,
                        tie_embeddings=True, norm_eps=1e-5, attention="sigmoid", qk_norm=True,
                        norm_placement="peri"),
      data=DataConfig(source="stdlib", tokenizer="byte", seq_len=128),
      train=TrainConfig(steps=600, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                        b2=0.99, weight_decay=0.1, log_every=20, eval_every=200, eval_steps=8),
      ckpt=CheckpointConfig(every=200, keep=2),
  )
