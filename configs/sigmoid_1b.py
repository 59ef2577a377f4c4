"""The sigmoid-attention paper's ~1B LM (Ramapuram et al. 2024, arXiv:2409.04431), paper scale.

    python train.py --config configs/sigmoid_1b.py data.path=<text files> --workdir runs/sigmoid_1b
    python train.py --config configs/sigmoid_1b.py --aot v5e:2x2

Should show: nothing on CPU (1.30B parameters); it is built by tests/test_zoo_sigmoid.py with
jax.eval_shape. `--aot v5e:2x2` (its mesh.topology) compiles the step for a TPU v5e 2x2 slice, fsdp
over the 4 chips, remat full, AXLearn's 1M-token batch as 32 micro-batches of 16 x 2048: 12.1 GiB
per chip of 16, fits (docs/scale.md). Architecture from AXLearn's `gala-sigmoid-1B-2k`
(apple/axlearn experiments/text/gpt/gala.py + gala_sigmoid.py, Apple's published configs for the
paper): 24 layers, width 2048, 32 heads of 64, SwiGLU 5632 (8/3 d rounded up to 256), RMSNorm eps
1e-5, QK-norm (RMSNorm over d_head), pre-norm, no biases, tied 32768-token embeddings, b = -log 2048
at context 2048. Two deviations: RoPE instead of ALiBi (the codebase has no ALiBi; neither has
parameters), and the data recipe (AXLearn: 300B tokens of a RedPajama/SlimPajama mix, 1M-token
batches, peak lr 0.01 with mup-simple scaling). Apple's 7B sigmoid run adds hybrid-norm:
model.norm_placement=peri (x + Norm(f(Norm(x))), the same block as Peri-LN).
"""
from configs.base import (CheckpointConfig, Config, DataConfig, MeshConfig, TrainConfig,
                          llama_style)


def get_config() -> Config:
  return Config(
      model=llama_style(vocab_size=32768, d_model=2048, n_layers=24, n_heads=32, d_ff=5632,
                        max_len=2048, tie_embeddings=True, norm_eps=1e-5, attention="sigmoid",
                        qk_norm=True, param_dtype="float32", dtype="bfloat16", remat="full"),
      data=DataConfig(source="text", tokenizer="bpe", bpe_vocab_size=32768, seq_len=2048),
      train=TrainConfig(steps=300_000, batch_size=512, grad_accum=32, lr=3e-4, min_lr=3e-5,
                        warmup_steps=5000, b2=0.95, weight_decay=0.1, log_every=100,
                        eval_every=5000, eval_steps=50),
      mesh=MeshConfig(data=1, fsdp=-1, topology="v5e:2x2"),
      ckpt=CheckpointConfig(every=5000, keep=3),
  )
