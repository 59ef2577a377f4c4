"""nanoGPT's CPU "baby" shakespeare_char run (nanoGPT README, "I only have a macbook"), reproduced.

    python train.py --config configs/shakespeare_char.py data.path=input.txt   (tinyshakespeare: docs/shakespeare_char.md)

4 layers, 4 heads, width 128, block 64, batch 12, dropout 0, AdamW lr 1e-3 (beta2 0.99, weight decay 0.1,
grad clip 1.0), 100 warmup iters, cosine to 1e-4 over 2000 iters, GPT-2 blocks with nanoGPT's default
bias=False (no biases in LayerNorm or Linear), tied embeddings, char tokenizer (vocab 65 for
tinyshakespeare), the last 10% of characters as validation, and nanoGPT's batches: windows at i.i.d.
uniformly random offsets (data.sampling=random). nanoGPT reports val loss 1.88 at iter 2000 (1.8857
when we ran it); this should show 1.875 (seed 0; 1.8750-1.8870 over seeds 0-2). nanoGPT estimates val
loss on 20 random batches; we use the first 20 fixed ones. One deliberate difference, for speed on
CPU: GELU is the tanh form (GPT-2's); nanoGPT's nn.GELU() is exact erf, slower in the XLA:CPU backward
on some hosts (model.gelu_exact=true restores it; same loss).

The CPU set-up depends on the host, like nanoGPT's dtype depends on its GPU (both measured on 2 cores,
docs/shakespeare_char.md): on a CPU with AMX-BF16 units (in /proc/cpuinfo) the matmuls take bfloat16
operands with float32 accumulation (activations, softmax, norms and the optimizer stay float32;
1.2-1.6x faster than float32 there) and each core is a JAX device; elsewhere everything is float32, as
in nanoGPT, on one JAX device (bfloat16 dots ran 1.35x slower than float32 on an AMD EPYC without
bfloat16 units, and two devices 1.1x slower than one; CPUs with AVX512-BF16 but no AMX are unmeasured
and get float32). The resolved values are printed and saved in config.json; override either
(model.matmul_dtype=..., mesh.cpu_devices=...) to pin it. Measured: val loss 1.8750 at 2000 in 2 min
(float32, 1 device, AMD); with the stride-T epochs of data.sampling=epochs, 1.8842 (bfloat16, 2 devices,
Intel) and 1.8881 (float32, AMD, 1 or 2 devices).
`python benchmarks/shakespeare_char.py` measures tokens/s against nanoGPT.
"""
from pathlib import Path

from configs.base import CheckpointConfig, Config, DataConfig, MeshConfig, TrainConfig, gpt2_style


def cpu_info(cpuinfo: str | None = None) -> dict[str, str]:
  """The first CPU's "key: value" lines of Linux's /proc/cpuinfo (empty elsewhere)."""
  if cpuinfo is None:
    f = Path("/proc/cpuinfo")
    cpuinfo = f.read_text() if f.exists() else ""
  fields = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(":")
    if sep:
      fields.setdefault(key.strip(), value.strip())
  return fields


def cpu_has_amx_bf16(cpuinfo: str | None = None) -> bool:
  """True if the CPU flags list AMX-BF16 (Intel Sapphire Rapids and later)."""
  return "amx_bf16" in cpu_info(cpuinfo).get("flags", "").split()


def get_config() -> Config:
  bf16 = cpu_has_amx_bf16()
  return Config(
      # Speed on a 2-core CPU (docs/shakespeare_char.md): 4 unrolled layers compile in seconds and
      # run faster than nn.scan's loop. With AMX the bfloat16 dots are cheap and one JAX device per
      # core (data parallel) was fastest; without bfloat16 units one device was.
      model=gpt2_style(vocab_size=65, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_len=64,
                       use_bias=False, norm_bias=False, scan_layers=False,
                       matmul_dtype="bfloat16" if bf16 else "float32"),
      mesh=MeshConfig(cpu_devices=2 if bf16 else 1),
      data=DataConfig(source="text", path="", tokenizer="char", seq_len=64, val_fraction=0.1,
                      sampling="random"),
      train=TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                        schedule="cosine", b1=0.9, b2=0.99, weight_decay=0.1, clip_norm=1.0,
                        log_every=50, eval_every=250, eval_steps=20),
      ckpt=CheckpointConfig(every=1000, keep=1),
  )
