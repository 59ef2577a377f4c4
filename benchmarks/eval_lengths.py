"""A task run's accuracy at several sequence lengths: length extrapolation (Mamba §4.1 induction heads).

    python benchmarks/eval_lengths.py --workdir runs/induction_tiny --lengths 64 128 256 512 [--batches N]

Restores the run's latest checkpoint (params only, checksums verified, the workdir left as it is:
training/evaluate.py's load_run) and evaluates it on the val split of its task drawn at each length
(as `data.eval_seq_len=L` would: val examples 0.. at seed 0, the task's knobs otherwise the run's),
with the loss and accuracies of the train step (training/step.py's loss_sums, over the answer
positions). Prints one JSON object:

    {"step": 2000, "train_seq_len": 64, "batches": 8, "batch_size": 32,
     "lengths": {"64": {"eval_loss": ..., "eval_accuracy": ..., "eval_seq_accuracy": ...,
                        "examples": 256}, "128": {...}, ...}}

benchmarks/reproduce.py runs it as an AfterRun (`--workdir <run>` appended); configs/repro_mamba.py
reads `lengths.<L>.eval_accuracy`. Only token tasks whose length is free (selective_copy, induction,
mqar, phonebook); a model with a learned position table cannot go past model.max_len.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from configs import base  # noqa: E402
from configs.base import ConfigError  # noqa: E402
from training import cli, platform_cpu  # noqa: E402


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="the task run to evaluate")
  p.add_argument("--lengths", type=int, nargs="+", required=True, help="sequence lengths T")
  p.add_argument("--batches", type=int, default=None,
                 help="val batches per length (default: the run's train.eval_steps)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  args = p.parse_args(argv)
  if any(t < 1 for t in args.lengths):
    raise ConfigError(f"--lengths {args.lengths}: each must be at least 1")
  if args.batches is not None and args.batches < 1:
    raise ConfigError(f"--batches {args.batches}: must be at least 1")
  return args


def at_length(cfg: base.Config, length: int, n_devices: int) -> base.Config:
  """cfg whose val split is drawn at `length` (data.eval_seq_len), validated as train.py would
  (ConfigError: the task cannot take that length, or a learned position table is too short)."""
  cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_seq_len=length))
  base.validate(cfg, n_devices)
  return cfg


def lengths_report(workdir: Path, lengths, batches: int | None = None,
                   step: int | None = None) -> dict:
  import jax

  import modelzoo
  from layers import sharding
  from training import evaluate
  from training import step as step_lib

  cfg, tok, step, params, mesh = evaluate.load_run(Path(workdir), step)
  if not cfg.data.task or cfg.model.d_in:
    raise ConfigError(f"{workdir}: data.source={cfg.data.source!r} is not a token task")
  n = batches or cfg.train.eval_steps
  model = modelzoo.build(cfg.model)
  b_sh = sharding.batch_sharding(mesh)
  out = {"step": step, "train_seq_len": cfg.data.seq_len, "batches": n,
         "batch_size": cfg.train.batch_size, "lengths": {}}
  for length in lengths:
    c = at_length(cfg, length, mesh.size)
    val = evaluate.val_batches(c, tok, n)
    eval_fn = jax.jit(step_lib.make_eval_step(model, c))
    row = evaluate.evaluate(eval_fn, params, val, None, b_sh, mesh)
    row["examples"] = sum(len(b["inputs"]) for b in val)
    out["lengths"][str(length)] = row
  return out


def main(argv=None) -> int:
  args = parse_args(argv)
  platform_cpu.start()
  cli.setup_logging(sys.stderr)
  print(json.dumps(lengths_report(Path(args.workdir), args.lengths, args.batches, args.step),
                   indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
