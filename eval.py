"""Evaluate a run's latest checkpoint on the validation split, and sample from it.

    python eval.py --workdir runs/quickstart
    python eval.py --workdir runs/quickstart --sample "def main(" --max-new-tokens 200 --temperature 0.8 --top-k 40

Prints one JSON object: step, eval_loss (nats/token), eval_ppl, eval_bpb (bits per UTF-8 byte) and,
with --sample, the generated text (KV-cache decoding). --logit-scale multiplies every attention logit
(the Dual-Stream paper's attention amplification); several values report the relative loss change.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import modelzoo
import train
from configs import base
from configs.base import ConfigError
from layers import sharding
from modelzoo import data as data_lib
from modelzoo import tokenize
from modelzoo.checkpoint import Checkpointer, CheckpointError
from modelzoo.generate import generate


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True)
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--batches", type=int, default=None, help="val batches (default: train.eval_steps)")
  p.add_argument("--logit-scale", type=float, nargs="+", default=[1.0])
  p.add_argument("--sample", default=None, help="prompt to continue")
  p.add_argument("--max-new-tokens", type=int, default=100)
  p.add_argument("--temperature", type=float, default=0.8)
  p.add_argument("--top-k", type=int, default=0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-cache", action="store_true", help="sample by full recomputation")
  return p.parse_args(argv)


def load_run(workdir: Path, step=None):
  """(cfg, tokenizer, step, params) of a run directory, params on a mesh over the local devices."""
  f = workdir / "config.json"
  if not f.exists():
    raise ConfigError(f"--workdir {workdir}: no config.json (not a seqzoo run directory)")
  cfg = base.from_dict(json.loads(f.read_text()))
  cfg = base.apply_overrides(cfg, [f"mesh.data={jax.device_count()}", "mesh.fsdp=1", "mesh.tensor=1"])
  tok = tokenize.build_tokenizer(cfg.data, workdir)
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
  model = modelzoo.build(cfg.model)
  tx, _ = train.make_optimizer(cfg.train)
  _, _, abstract, _ = train.init_state(model, tx, cfg, mesh)
  ckpt = Checkpointer(workdir, cfg.ckpt.every, cfg.ckpt.keep)
  if not ckpt.steps():
    raise ConfigError(f"--workdir {workdir}: no checkpoint in {ckpt.dir}")
  s, state, _ = ckpt.restore(abstract, step)
  ckpt.close()
  if state is None:
    raise ConfigError(f"--workdir {workdir}: no checkpoint could be restored")
  return cfg, tok, s, state.params, mesh


def main(argv=None) -> int:
  args = parse_args(argv)
  workdir = Path(args.workdir)
  cfg, tok, step, params, mesh = load_run(workdir, args.step)
  n = args.batches or cfg.train.eval_steps
  b = cfg.train.batch_size - cfg.train.batch_size % jax.device_count() or jax.device_count()
  cfg_b = base.apply_overrides(cfg, [f"train.batch_size={b}", "train.grad_accum=1"])
  model = modelzoo.build(cfg.model)
  b_sh = train.batch_sharding(mesh)
  batches = train.val_batches(cfg_b, tok, n)
  bpt = data_lib.bytes_per_token(cfg.data, tok, "val")
  out = {"step": step, "batches": len(batches)}
  for alpha in args.logit_scale:
    def eval_step(p, batch, alpha=alpha):
      logits = model.apply({"params": p}, batch["inputs"], batch["positions"],
                           batch["segment_ids"] if cfg.data.pack else None, logit_scale=alpha)
      logits = logits.astype(jnp.float32)
      nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
          logits, batch["targets"][..., None], -1)[..., 0]
      return (nll * batch["weights"]).sum(), batch["weights"].sum()
    res = train.evaluate(jax.jit(eval_step), params, batches, bpt, b_sh, mesh)
    if len(args.logit_scale) == 1:
      out.update(res)
    else:
      out.setdefault("logit_scale", {})[str(alpha)] = res
  if len(args.logit_scale) > 1:
    ref = out["logit_scale"][str(args.logit_scale[0])]["eval_loss"]
    for r in out["logit_scale"].values():
      r["rel_loss_increase"] = r["eval_loss"] / ref - 1.0
  if args.sample is not None:
    prompt = tok.encode(args.sample)
    if len(prompt) == 0:
      raise ConfigError("--sample: the prompt encodes to no tokens")
    total = len(prompt) + args.max_new_tokens
    if cfg.model.pos == "learned" and total > cfg.model.max_len:
      raise ConfigError(f"prompt ({len(prompt)} tokens) + --max-new-tokens {args.max_new_tokens} "
                        f"exceeds model.max_len={cfg.model.max_len}")
    ids = generate(params, jnp.asarray(prompt, jnp.int32)[None], jax.random.PRNGKey(args.seed),
                   model_cfg=cfg.model, max_new=args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, use_cache=not args.no_cache, logit_scale=args.logit_scale[0])
    out["sample"] = tok.decode(np.asarray(ids[0]))
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except CheckpointError as e:  # unreadable checkpoints: the environment, not the code
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
