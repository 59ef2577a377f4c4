"""Evaluate a run's latest checkpoint on the validation split, and sample from it.

    python eval.py --workdir runs/quickstart
    python eval.py --workdir runs/quickstart --sample "def main(" --max-new-tokens 200 --temperature 0.8 --top-k 40
    python eval.py --workdir runs/quickstart --aot v5e:2x2      # or --config configs/X.py [k=v ...]

Prints one JSON object: step, eval_loss (nats/token), eval_ppl, eval_bpb (bits per UTF-8 byte) and,
with --sample, the generated text (KV-cache decoding). --logit-scale multiplies every attention logit
(the Dual-Stream paper's attention amplification); several values report the relative loss change.

The run is restored onto its own mesh (config.json's mesh.*); where these devices cannot hold it (a
pod run on a laptop) onto the nearest mesh they can, said in a note on stderr
(export_io.restore_mesh). The eval batch is train.batch_size rounded down to a multiple of the
data-parallel size. --aot TOPOLOGY compiles the eval step for a TPU/GPU slice on this host (as
`train.py --aot`), prints memory per device against HBM and exits 4 if it does not fit.
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
from data import sources, tokenize
from modelzoo import export_io
from modelzoo.checkpoint import Checkpointer, CheckpointError
from modelzoo.generate import generate
from training import aot
from training import step as step_lib


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", help="the run to evaluate (required unless --aot with --config)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--batches", type=int, default=None, help="val batches (default: train.eval_steps)")
  p.add_argument("--logit-scale", type=float, nargs="+", default=[1.0])
  p.add_argument("--sample", default=None, help="prompt to continue")
  p.add_argument("--max-new-tokens", type=int, default=100)
  p.add_argument("--temperature", type=float, default=0.8)
  p.add_argument("--top-k", type=int, default=0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-cache", action="store_true", help="sample by full recomputation")
  p.add_argument("--aot", metavar="TOPOLOGY", default=None,
                 help="compile the eval step for a TPU/GPU slice (v5e:2x2, v5p:4x4x4, h100:1x1x8, "
                      "...) and report its memory per device; runs nothing")
  p.add_argument("--config", default=None,
                 help="--aot: the config to compile (default: the --workdir run's config.json)")
  p.add_argument("overrides", nargs="*", help="--aot: key.path=value applied to the config")
  args = p.parse_args(argv)
  if not args.aot and (args.config or args.overrides):
    raise ConfigError("--config and key=value overrides are for --aot only: eval.py evaluates a "
                      "run as it was trained")
  if not args.workdir and not (args.aot and args.config):
    raise ConfigError("eval.py needs --workdir RUN (or, with --aot, --config FILE)")
  return args


def load_run(workdir: Path, step=None, devices=None):
  """(cfg, tokenizer, step, params, mesh) of a run directory, params restored onto the run's own
  mesh over `devices` (default: all), or the nearest they can hold (export_io.restore_mesh). cfg
  carries that mesh and an eval batch divisible by its data-parallel size (export_io.on_mesh)."""
  cfg = export_io.read_config(workdir)
  tok = tokenize.build_tokenizer(cfg.data, workdir)
  mesh = export_io.restore_mesh(cfg, devices)
  cfg = export_io.on_mesh(cfg, mesh)
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


def make_eval_step(model, cfg: base.Config, alpha: float = 1.0):
  """(params, batch) -> (summed token NLL, summed weights), attention logits scaled by alpha."""
  def eval_step(p, batch):
    logits_BTV = model.apply({"params": p}, batch["inputs"], batch["positions"],
                             batch["segment_ids"] if cfg.data.pack else None, logit_scale=alpha)
    logits_BTV = logits_BTV.astype(jnp.float32)
    nll_BT = jax.nn.logsumexp(logits_BTV, -1) - jnp.take_along_axis(
        logits_BTV, batch["targets"][..., None], -1)[..., 0]
    return (nll_BT * batch["weights"]).sum(), batch["weights"].sum()
  return eval_step


def lower_eval(cfg: base.Config, devices, alpha: float = 1.0):
  """eval.py's step lowered for `devices` (a topology's), on the mesh a restore there would use:
  (lowered, abstract (params, batch), mesh sizes), as aot.memory_report takes it."""
  mesh = export_io.restore_mesh(cfg, devices)
  cfg = export_io.on_mesh(cfg, mesh)
  base.validate(cfg, mesh.size)
  modelzoo.check(cfg.model)
  args = (export_io.param_target(cfg.model, cfg.data.seq_len, mesh),
          step_lib.batch_spec(cfg, sharding.batch_sharding(mesh)))
  with sharding.activate(mesh):
    lowered = jax.jit(make_eval_step(modelzoo.build(cfg.model), cfg, alpha)).lower(*args)
  return lowered, args, dict(mesh.shape)


def compile_for(args) -> int:
  """--aot: the eval step compiled for a topology by this host's CPU; nothing runs."""
  jax.config.update("jax_platforms", "cpu")   # before any backend: no accelerator is looked for
  if args.config:
    cfg, name = base.load(args.config, args.overrides), args.config
  else:
    cfg = base.apply_overrides(export_io.read_config(Path(args.workdir)), args.overrides)
    name = f"{args.workdir}/config.json"
  r = aot.memory_report(args.aot, lambda devices: lower_eval(cfg, devices, args.logit_scale[0]))
  print(aot.show(r, f"eval step of {name}"))
  return 0 if r["fits"] else aot.EXIT_DOES_NOT_FIT


def main(argv=None, devices=None) -> int:
  """devices: those to evaluate on (default: all; tests pass fewer)."""
  args = parse_args(argv)
  if args.aot:
    return compile_for(args)
  workdir = Path(args.workdir)
  cfg, tok, step, params, mesh = load_run(workdir, args.step, devices)
  n = args.batches or cfg.train.eval_steps
  model = modelzoo.build(cfg.model)
  b_sh = train.batch_sharding(mesh)
  batches = train.val_batches(cfg, tok, n)
  bpt = sources.bytes_per_token(cfg.data, tok, "val")
  out = {"step": step, "batches": len(batches), "mesh": dict(mesh.shape)}
  for alpha in args.logit_scale:
    eval_step = jax.jit(make_eval_step(model, cfg, alpha))
    res = train.evaluate(eval_step, params, batches, bpt, b_sh, mesh)   # traced on the mesh
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
    with sharding.activate(mesh):     # one row: the kernels replicate it over data x fsdp
      ids = generate(params, jnp.asarray(prompt, jnp.int32)[None], jax.random.PRNGKey(args.seed),
                     model_cfg=cfg.model, max_new=args.max_new_tokens, temperature=args.temperature,
                     top_k=args.top_k, use_cache=not args.no_cache,
                     logit_scale=args.logit_scale[0])
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
