"""Runs Hugging Face transformers for tests/test_export.py, in a process of its own.

    python -P tests/hf_worker.py probe OUT.json
    python -P tests/hf_worker.py make gpt2|llama HF_DIR TOKENS.npy OUT.npz
    python -P tests/hf_worker.py load HF_DIR TOKENS.npy OUT.npz

Why a subprocess: transformers imports the PyPI package `kernels` at import time, and any process
whose sys.path holds the repo root finds seqzoo's `kernels/` first. So transformers runs where the
repo is not on sys.path: `-P` (no script or cwd entry), a cwd outside the repo and no PYTHONPATH.
`make` builds a seeded random model and saves it; `load` reads a folder (e.g. a seqzoo export).
Both write the model's logits on TOKENS and its state dict (numpy) to OUT.npz.
"""
import json
import sys

import numpy as np


def probe(out):
  """Which `kernels` transformers sees, after importing the model classes the tests load."""
  import kernels
  from transformers import GPT2LMHeadModel, LlamaForCausalLM  # noqa: F401 (imports hub_kernels)
  with open(out, "w") as f:
    json.dump({"kernels": kernels.__file__, "sys_path": sys.path}, f)


def random_model(arch):
  import torch
  import transformers
  torch.manual_seed(0)
  if arch == "gpt2":
    c = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                n_inner=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(c)
  else:
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=64, rms_norm_eps=1e-6,
                                 rope_parameters=dict(rope_type="default", rope_theta=500000.0))
    model = transformers.LlamaForCausalLM(c)
  with torch.no_grad():         # every tensor random: norms and biases are tested too
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.2 + (p == 1).all())
  return model.eval()


def save_outputs(model, tokens_path, out):
  import torch
  x = np.load(tokens_path)
  with torch.no_grad():
    logits = model(torch.as_tensor(x, dtype=torch.long)).logits.numpy()
  state = {"state." + k: v.numpy() for k, v in model.state_dict().items()}
  np.savez(out, logits=logits, **state)


def main(cmd, *args):
  if cmd == "probe":
    probe(*args)
  elif cmd == "make":
    arch, hf_dir, tokens, out = args
    model = random_model(arch)
    model.save_pretrained(hf_dir, max_shard_size="40KB")      # several files + an index
    save_outputs(model, tokens, out)
  elif cmd == "load":
    import transformers
    hf_dir, tokens, out = args
    arch = json.load(open(f"{hf_dir}/config.json"))["architectures"][0]
    save_outputs(getattr(transformers, arch).from_pretrained(hf_dir).eval(), tokens, out)
  else:
    raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
  main(*sys.argv[1:])
