"""docs/scale.md's table: each config that names a slice (mesh.topology) compiled for that slice.

    python benchmarks/scale_table.py                  # every such config; rewrites docs/scale.md's table
    python benchmarks/scale_table.py --configs mamba_130m --print          # one row, to stdout
    python benchmarks/scale_table.py --configs deltanet_1p3b --topology h100:1x1x8 --section h100
    python benchmarks/scale_table.py --json reports.json --resume   # compile only what it lacks

Each row is train.py --aot's report (training/aot.py: the real XLA TPU/GPU compiler run on this
host's CPU over train.py's own step), one config per child process and one at a time: an 8B step's
compile holds several GB of host memory, and nothing carries over between configs. The figures
are the compiler's memory plan and a roofline built from its cost analysis: estimates, not
measurements (nothing runs on a TPU or GPU here). Exit 4 if any config does not fit.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "scale.md"
GiB = 2**30
# training/aot.count_flops counts loop-free versions of the step, but XLA:TPU's SPMD partitioner
# adds loops of its own to them: windowed einsums (collective matmuls) over a large fsdp axis, whose
# bodies cost analysis counts once (mamba_2_8b on fsdp=8: 0.64x the model's FLOPs, bytes halved).
# The counting compiles run with them off (the same dots); the step reported is train.py's own.
NO_SPMD_LOOPS = {"xla_tpu_enable_windowed_einsum_for_all_gather": False,
                 "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False}


def sized_configs() -> list[str]:
  """configs/*.py whose config names a slice (mesh.topology), by name."""
  from configs import base
  return [p.stem for p in base.config_files() if base.load(str(p)).mesh.topology]


def base_topology(name: str) -> str:
  from configs import base
  return base.load(str(ROOT / "configs" / f"{name}.py")).mesh.topology


def one(name: str, topology: str, overrides: list[str]) -> dict:
  """The child: --aot's report for one config, plus the settings the table names."""
  import jax
  jax.config.update("jax_platforms", "cpu")    # as train.py --aot: no accelerator is looked for
  from configs import base
  from training import aot
  cfg = base.load(str(ROOT / "configs" / f"{name}.py"), overrides)
  count = aot.count_flops          # only XLA:TPU has a cost analysis, so only TPU steps get here
  aot.count_flops = lambda c, devices, options: count(c, devices, {**(options or {}),
                                                                  **NO_SPMD_LOOPS})
  topology = topology or cfg.mesh.topology
  t0 = time.perf_counter()
  r = aot.report(cfg, topology)
  r.update(config=name, overrides=overrides, remat=cfg.model.remat, dtype=cfg.model.dtype,
           grad_accum=cfg.train.grad_accum, batch=cfg.train.batch_size, seq_len=cfg.data.seq_len,
           wall_s=time.perf_counter() - t0)
  return r


def versions() -> str:
  out = [f"jax {importlib.metadata.version('jax')}"]
  for dist in ("libtpu", "libtpu-nightly", "jax-cuda12-plugin"):
    try:
      out.append(f"{dist} {importlib.metadata.version(dist)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  return ", ".join(out)


def row(r: dict) -> str:
  per_chip = r["devices_per_chip"]
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1 device"
  tokens = r["batch"] * r["seq_len"]
  head = [r["config"], r["topology"], mesh, r["remat"], str(r["grad_accum"]),
          f"{tokens:,} ({r['batch']} x {r['seq_len']})"]
  hbm = r["hbm_bytes"] * per_chip / GiB
  if "total_bytes" not in r:                   # the compiler refused: its words
    return "| " + " | ".join(head + [f"does not fit: {r['compiler_says']}"] + ["-"] * 5) + " |"
  mem = f"{r['total_bytes'] * per_chip / GiB:.1f} of {hbm:.1f} ({r['headroom']:.0%} free)"
  if not r["fits"]:
    return "| " + " | ".join(head + [mem + ": does not fit"] + ["-"] * 5) + " |"
  flops = r["flops"] * r["devices"]
  mfu = f"{r['mfu']:.0%}" if r["mfu"] is not None else "- (no cost analysis)"
  step = f"{r['step_s']:.3g} s ({r['bound']})"
  tok = f"{r['tokens_per_s_per_chip']:,.0f}"
  return "| " + " | ".join(head + [mem, f"{flops:.3g} ({r['flops_vs_model']:.2f}x model)", step,
                                   tok, mfu, f"{r['wall_s']:.0f}"]) + " |"


HEADER = ("| config | topology | mesh | remat | grad_accum | tokens per step | GiB per chip "
          "(of HBM) | FLOPs per step (all chips) | roofline step time | tokens/s per chip | "
          "MFU estimate | compile + count (s) |\n" + "|---" * 12 + "|")


def table(reports: list[dict], args) -> str:
  """The table, stamped with the command that regenerates it (--json/--resume are bookkeeping)."""
  flags = ([f"--configs {' '.join(args.configs)}"] if args.configs else []) + \
      ([f"--topology {args.topology}"] if args.topology else []) + \
      ([f"--section {args.section}"] if args.section != "slices" else []) + args.overrides
  stamp = (f"Generated {datetime.date.today().isoformat()} by `python benchmarks/scale_table.py"
           f"{''.join(' ' + f for f in flags)}` with {versions()}.")
  return "\n".join([stamp, "", HEADER, *map(row, reports)])


def write_section(section: str, text: str) -> None:
  """Replaces what lies between <!-- scale_table:SECTION --> and <!-- /scale_table:SECTION -->."""
  doc = DOC.read_text()
  begin, end = f"<!-- scale_table:{section} -->", f"<!-- /scale_table:{section} -->"
  if begin not in doc or end not in doc:
    sys.exit(f"{DOC} has no {begin} ... {end} markers")
  head, rest = doc.split(begin, 1)
  DOC.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--configs", nargs="*", help="config names (default: every one with a slice)")
  p.add_argument("--topology", default="", help="compile for this slice instead of mesh.topology")
  p.add_argument("--section", default="slices", help="the docs/scale.md table to rewrite")
  p.add_argument("--print", action="store_true", help="print the table instead of writing it")
  p.add_argument("--json", help="also write the reports (training/aot.report's dicts) here, "
                                "after each config")
  p.add_argument("--resume", action="store_true",
                 help="reuse --json's reports of the same config, topology and overrides (an "
                      "interrupted or extended table compiles only the configs it lacks)")
  p.add_argument("--one", help=argparse.SUPPRESS)               # the child process
  p.add_argument("overrides", nargs="*", help="key.path=value, applied to every config")
  args = p.parse_args(argv)
  if args.one:
    print(json.dumps(one(args.one, args.topology, args.overrides), default=float))
    return 0
  if args.resume and not args.json:
    sys.exit("--resume reads the reports of --json FILE: give it")
  done_before = {}
  if args.resume and Path(args.json).exists():
    done_before = {(r["config"], r["topology"], tuple(r["overrides"])): r
                   for r in json.loads(Path(args.json).read_text())}
  reports = []
  for name in args.configs or sized_configs():
    topology = args.topology or base_topology(name)
    if (r := done_before.get((name, topology, tuple(args.overrides)))):
      reports.append(r)
      continue
    cmd = [sys.executable, __file__, "--one", name, "--topology", args.topology, *args.overrides]
    print(f"compiling {name} ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
      sys.exit(f"{name}: the compile failed:\n{done.stderr[-3000:]}")
    reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(row(reports[-1]), file=sys.stderr, flush=True)
    if args.json:
      Path(args.json).write_text(json.dumps(reports, indent=1, default=float))
  text = table(reports, args)
  if args.print:
    print(text)
  else:
    write_section(args.section, text)
  return 0 if all(r["fits"] for r in reports) else 4


if __name__ == "__main__":
  sys.exit(main())
