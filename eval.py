"""Evaluate a run's latest checkpoint on the validation split, and sample from it.

    python eval.py --workdir runs/quickstart
    python eval.py --workdir runs/quickstart --sample "def main(" --max-new-tokens 200 --temperature 0.8 --top-k 40
    python eval.py --workdir runs/quickstart --aot v5e:2x2      # or --config configs/X.py [k=v ...]

Prints one JSON object: step, eval_loss (nats/token), eval_ppl, eval_bpb (bits per UTF-8 byte) and,
with --sample, the generated text (KV-cache decoding; the draws depend on --seed, the run and the
checkpoint step). A task run (data.source=mqar, ..., data/tasks.py) reports eval_loss with
eval_accuracy and eval_seq_accuracy over the answer positions instead of ppl and bpb (at
data.eval_seq_len if the run set it); linear_regression reports eval_mse and "regression": the
model's squared error per context length k beside OLS, ridge, one GD step and the zero predictor on
the same val draws (training/evaluate.py's regression_curves). --logit-scale multiplies every attention logit (the Dual-Stream paper's attention
amplification); several values report the relative loss change. --quant w8a8 adds the eval row
of the model with 8-bit weights and activations (training/quantize.py) and its loss increase.

The checkpoint's checksums are verified; a bad checkpoint is named on stderr and the previous one
evaluated (left in place: eval.py changes nothing in the workdir). A checkpoint without checksums
is refused unless --allow-unverified.

The run is restored onto its own mesh (config.json's mesh.*); where these devices cannot hold it (a
pod run on a laptop) onto the nearest mesh they can, said in a note on stderr
(training/workdir.py). The eval batch is train.batch_size rounded down to a multiple of the
data-parallel size. --aot TOPOLOGY compiles the eval step for a TPU/GPU slice on this host (as
`train.py --aot`), prints memory per device against HBM and exits 4 if it does not fit.
Exit codes: training/cli.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from configs import base
from configs.base import ConfigError
from training import aot, cli, evaluate, platform_cpu, quantize
from training import workdir as workdir_lib


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", help="the run to evaluate (required unless --aot with --config)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--batches", type=int, default=None, help="val batches (default: train.eval_steps)")
  p.add_argument("--logit-scale", type=float, nargs="+", default=[1.0])
  p.add_argument("--quant", choices=quantize.MODES, default=None,
                 help="also evaluate with weights and Dense inputs fake-quantized (training/quantize.py)")
  p.add_argument("--sample", default=None, help="prompt to continue")
  p.add_argument("--max-new-tokens", type=int, default=100)
  p.add_argument("--temperature", type=float, default=0.8)
  p.add_argument("--top-k", type=int, default=0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-cache", action="store_true", help="sample by full recomputation")
  cli.add_allow_unverified(p, "restore")
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
  check_ranges(args)
  return args


def check_ranges(args) -> None:
  """Before anything loads: a count below 1 would evaluate nothing and report a loss of 0."""
  for flag, value in (("--batches", args.batches), ("--max-new-tokens", args.max_new_tokens)):
    if value is not None and value < 1:
      raise ConfigError(f"{flag} {value}: must be at least 1")
  if args.top_k < 0:
    raise ConfigError(f"--top-k {args.top_k}: must be 0 (off) or positive")
  if not 0 <= args.temperature < float("inf"):
    raise ConfigError(f"--temperature {args.temperature}: must be finite and at least 0 (0: greedy)")


def compile_for(args) -> int:
  """--aot: the eval step compiled for a topology by this host's CPU; nothing runs."""
  aot.compile_on_this_host()
  if args.config:
    cfg, name = base.load(args.config, args.overrides), args.config
  else:
    cfg = base.apply_overrides(workdir_lib.read_config(Path(args.workdir)), args.overrides)
    name = f"{args.workdir}/config.json"
  r = aot.memory_report(args.aot, lambda devices: evaluate.lower_eval(cfg, devices,
                                                                      args.logit_scale[0]))
  return aot.verdict(r, f"eval step of {name}")


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.aot:
    return compile_for(args)
  platform_cpu.start()
  cli.setup_logging(sys.stderr)     # stdout is the JSON report: warnings go to stderr
  out = evaluate.report(Path(args.workdir), step=args.step, batches=args.batches,
                        logit_scales=args.logit_scale, sample=args.sample,
                        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, seed=args.seed, use_cache=not args.no_cache,
                        allow_unverified=args.allow_unverified, quant=args.quant)
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
