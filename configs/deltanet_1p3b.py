"""DeltaNet 1.3B (Yang et al. 2024, arXiv:2406.06484: 1.3B parameters, 100B SlimPajama tokens).

    python train.py --config configs/deltanet_1p3b.py data.path=<text files> --workdir runs/dn1p3b
    python train.py --config configs/deltanet_1p3b.py --aot v5e:2x2

Should show: nothing on CPU (1.37B parameters); tests/test_zoo_deltanet.py builds it with
jax.eval_shape. `--aot v5e:2x2` (its mesh.topology) compiles the step for a TPU v5e 2x2 slice, fsdp
over the 4 chips, remat full, 16 micro-batches of 16 x 2048: 12.5 GiB per chip of 16, fits
(docs/scale.md). Shape of the paper's released checkpoint fla-hub/delta_net-1.3B-100B (config.json):
24 layers, width 2048, 16 heads of 128 (expand_k = expand_v = 1), short conv 4 on q/k/v with SiLU,
L2-normalised q/k, beta = sigmoid(W x), per-head RMSNorm on the output, no output gate, SwiGLU 5632
(FLA: 4 d * 2/3 rounded up to 256), RMSNorm eps 1e-6, untied 32000-token embeddings (the Mistral
tokenizer), context 2048. 100B tokens = 190,735 steps of 256 x 2048; the paper's optimiser
details are not reproduced here (lr/batch are placeholders). The hybrids: deltanet_1p3b_swa.py,
deltanet_1p3b_global.py; Gated DeltaNet: model.dn_decay=true model.dn_gate=true.
"""
from configs.base import (CheckpointConfig, Config, DataConfig, MeshConfig, TrainConfig,
                          llama_style)


def model(**kw):
  base = dict(name="deltanet", vocab_size=32000, d_model=2048, n_layers=24, n_heads=16,
              d_ff=5632, max_len=2048, pos="rope", norm_eps=1e-6, tie_embeddings=False,
              dn_conv=4, dn_chunk=64, param_dtype="float32", dtype="bfloat16", remat="full")
  return llama_style(**{**base, **kw})


def get_config(**model_kw) -> Config:
  return Config(
      model=model(**model_kw),
      data=DataConfig(source="text", tokenizer="bpe", bpe_vocab_size=32000, seq_len=2048),
      train=TrainConfig(steps=190_735, batch_size=256, grad_accum=16, lr=3e-4, min_lr=3e-5,
                        warmup_steps=2000, b2=0.95, weight_decay=0.1, log_every=100,
                        eval_every=5000, eval_steps=50),
      mesh=MeshConfig(data=1, fsdp=-1, topology="v5e:2x2"),
      ckpt=CheckpointConfig(every=5000, keep=3),
  )
