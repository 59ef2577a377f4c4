"""nanoGPT's CPU "baby" shakespeare_char run (nanoGPT README, "I only have a macbook"), reproduced.

    python train.py --config configs/shakespeare_char.py data.path=../shared/data/tinyshakespeare.txt

4 layers, 4 heads, width 128, block 64, batch 12, dropout 0, AdamW lr 1e-3 (beta2 0.99, weight decay 0.1,
grad clip 1.0), 100 warmup iters, cosine to 1e-4 over 2000 iters, GPT-2 blocks with nanoGPT's default
bias=False (no biases in LayerNorm or Linear), tied embeddings, char tokenizer (vocab 65 for
tinyshakespeare), the last 10% of characters as validation. nanoGPT reports val loss 1.88 at iter 2000;
this should reach <= 1.88. nanoGPT estimates val loss on 20 random batches; we use the first 20 fixed
ones. Two deliberate differences, both for speed on CPU: GELU is the tanh form (GPT-2's); nanoGPT's
nn.GELU() is exact erf, much slower in the XLA:CPU backward (model.gelu_exact=true restores it). And
the matmuls (projections, attention, MLP, head) take bfloat16 operands with float32 accumulation
(activations, softmax, norms and the optimizer stay float32): 1.2-1.6x faster on CPUs with AMX or
AVX512-BF16; nanoGPT runs float32 on CPU, as model.matmul_dtype=float32 does (use it on a CPU without
bf16 units). Measured: val loss 1.8842 at 2000 in 2 min on 2 cores, 1.8881 in float32
(docs/shakespeare_char.md);
`python benchmarks/shakespeare_char.py` measures tokens/s against nanoGPT.
"""
from configs.base import CheckpointConfig, Config, DataConfig, MeshConfig, TrainConfig, gpt2_style


def get_config() -> Config:
  return Config(
      # Speed on a 2-core CPU (docs/shakespeare_char.md): 4 unrolled layers compile in seconds and
      # run faster than nn.scan's loop; one JAX device per core (data parallel) beats one device
      # splitting these small ops over both cores.
      model=gpt2_style(vocab_size=65, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=64,
                       use_bias=False, norm_bias=False, scan_layers=False, matmul_dtype="bfloat16"),
      mesh=MeshConfig(cpu_devices=2),
      data=DataConfig(source="text", path="", tokenizer="char", seq_len=64, val_fraction=0.1),
      train=TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                        schedule="cosine", b1=0.9, b2=0.99, weight_decay=0.1, clip_norm=1.0,
                        log_every=50, eval_every=250, eval_steps=20),
      ckpt=CheckpointConfig(every=1000, keep=1),
  )
