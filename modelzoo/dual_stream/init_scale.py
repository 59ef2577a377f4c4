"""The streams' scale at initialisation: RMS of x_t and x_e after each block, before any training.

    python -m modelzoo.dual_stream.init_scale --config configs/dual_stream_tiny_kronecker.py [key=value ...]
    python -m modelzoo.dual_stream.init_scale --config configs/dual_stream_tiny_kronecker.py --table

One line per layer l = 0..L (0 = the embedding), on the first validation batch of the config's data
(the batch eval.py reads first), parameters from train.py's init (seed train.seed). --table prints
docs/dual_stream.md's table instead: the Kronecker inits of M_V and M_O (and raw V) side by side.
"""
from __future__ import annotations

import argparse
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import modelzoo
from modelzoo.dual_stream.model import interpret


def stream_rms(model_cfg, params, tokens_BT) -> tuple[np.ndarray, np.ndarray]:
  """RMS over (batch, positions, channels) of x_t and x_e, [L+1] each (index 0 = before block 1)."""
  out = interpret(params, tokens_BT, model_cfg=model_cfg)
  rms = lambda x: np.sqrt(np.mean(np.square(np.asarray(x, np.float64)), axis=(1, 2, 3)))
  return rms(out["x_t"]), rms(out["x_e"])


def init_params(model_cfg, seed: int, seq_len: int):
  model = modelzoo.build(model_cfg)
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return nn.unbox(model.init(jax.random.PRNGKey(seed), tokens)["params"])


# docs/dual_stream.md's rows: (label, overrides of the model section)
VARIANTS = (
    ("M_V = I, M_O = I (kron_init=identity, the first default)", {"kron_init": "identity"}),
    ("M_V = I, M_O ~ N(0, 0.02/sqrt(2L)) (default)", {}),
    ("M_V ~ N(0, 0.02), M_O = I", {"kron_init_v": "normal", "kron_init_o": "identity"}),
    ("M_V ~ N(0, 0.02), M_O ~ N(0, 0.02/sqrt(2L)) (kron_init=normal, the precursor's)",
     {"kron_init": "normal"}),
    ("M_V = I, M_O = I, raw V (v_norm=false)", {"kron_init": "identity", "v_norm": False}),
    ("M_V, M_O normal, raw V (v_norm=false)", {"kron_init": "normal", "v_norm": False}),
)


def main(argv=None) -> None:
  from configs import base
  from data import pipeline
  from data.tokenize import build_tokenizer

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--table", action="store_true", help="all Kronecker inits, as a markdown table")
  ap.add_argument("overrides", nargs="*")
  args = ap.parse_args(argv)
  cfg = base.load(args.config, args.overrides)
  tok = build_tokenizer(cfg.data)
  batch = next(iter(pipeline.build_dataset(cfg.data, tok, "val", batch_size=cfg.train.batch_size,
                                            seed=0, process_index=0, process_count=1)))
  tokens = jnp.asarray(batch["inputs"])
  L = cfg.model.n_layers
  if not args.table:
    modelzoo.check(cfg.model)
    xt, xe = stream_rms(cfg.model, init_params(cfg.model, cfg.train.seed, tokens.shape[1]), tokens)
    print("layer  rms(x_t)  rms(x_e)")
    for i in range(L + 1):
      print(f"{i:5d}  {xt[i]:8.3f}  {xe[i]:8.3f}")
    return
  dense = dataclasses.replace(cfg.model, mix_v="dense", mix_o="dense")
  rows = [("dense V/O (reference)", dense)]
  rows += [(label, dataclasses.replace(cfg.model, mix_v="kronecker", mix_o="kronecker", **kw))
           for label, kw in VARIANTS]
  print("| init | " + " | ".join(f"x_t {i}" for i in range(L + 1)) + " | "
        + " | ".join(f"x_e {i}" for i in range(1, L + 1)) + " |")
  print("|---" * (2 * L + 2) + "|")
  for label, m in rows:
    modelzoo.check(m)
    xt, xe = stream_rms(m, init_params(m, cfg.train.seed, tokens.shape[1]), tokens)
    print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in xt) + " | "
          + " | ".join(f"{v:.3f}" for v in xe[1:]) + " |")


if __name__ == "__main__":
  main()
