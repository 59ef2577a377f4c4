"""Run a reproduced claim's whole sweep: every (variant, seed) of a configs/repro_<row>.py, in turn.

    python benchmarks/reproduce.py configs/repro_<row>.py [--seeds N] [--runs DIR] [--dry-run] [k=v ...]

Each run is `python train.py --config <variant's config> --workdir <runs>/<row>/<variant>-s<seed>
<row's overrides> <variant's overrides> train.seed=<seed> <k=v ...>` (default runs root:
runs/repro), then the variant's after-run commands (e.g. `eval.py --logit-scale 1 2 4 8 16`,
stdout kept as <workdir>/<name>.json). Resumable: a complete run (final eval logged, final
checkpoint written, after-run outputs present) is skipped, an interrupted one resumes from its
checkpoint (train.py does that), so rerunning the command continues an interrupted sweep. A run
that fails is reported (its log: <runs>/<row>/logs/<run>.log) and the sweep goes on; the exit code
is 1 if any failed, 130 on Ctrl-C (the running train.py saves its checkpoint first).
Before running it prints the plan and a time estimate from the speeds the row file states.
`--dry-run` prints the plan and stops. k=v overrides apply to every run (e.g. a short smoke:
`train.steps=5 train.warmup_steps=1`); use another --runs for those, and pass the same k=v to
results.py. Then: `python benchmarks/results.py` regenerates docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repo root
from benchmarks import claims  # the row files import it under this name too
from configs.base import ConfigError

ROOT = claims.ROOT


def status(run: claims.Run, steps: int) -> tuple[str, float]:
  """('done' | 'resume from step k' | 'after-run only' | 'new', the steps left to train)."""
  if claims.run_done(run, steps):
    return "done", 0
  if claims.train_done(run.workdir, steps):
    return "after-run only", 0
  k = claims.trained_to(run.workdir)
  if k:
    return f"resume from step {k}", steps - k
  return "new", steps


def estimate_s(row: claims.Row, run: claims.Run, steps: int) -> float:
  state, left = status(run, steps)
  if state == "done":
    return 0.0
  t = sum(a.est_s for a in run.variant.after)
  if left:
    t += (run.variant.startup_s or row.startup_s) + left / run.variant.steps_per_sec
  return t


def fmt_s(s: float) -> str:
  return f"{s / 60:.0f} min" if s >= 60 else f"{s:.0f} s"


def run_logged(argv: list[str], log: Path, stdout=None) -> int:
  """argv from the repo root; stderr (and stdout, unless captured) appended to the log."""
  log.parent.mkdir(parents=True, exist_ok=True)
  with open(log, "a") as f:
    f.write(f"\n$ {' '.join(argv)}   # {datetime.datetime.now().isoformat(timespec='seconds')}\n")
    f.flush()
    return call(argv, stdout or f, f)


def call(argv: list[str], stdout, stderr) -> int:
  """The one place a command runs (tests replace it). A Ctrl-C in the terminal reaches the child
  too (one process group): train.py then saves its checkpoint and exits 130, so the child is
  waited for, never killed; the interrupt is raised here once it has exited."""
  p = subprocess.Popen(argv, cwd=ROOT, stdout=stdout, stderr=stderr)
  interrupted = False
  while True:
    try:
      rc = p.wait()
      break
    except KeyboardInterrupt:
      interrupted = True
  if interrupted:
    raise KeyboardInterrupt
  return rc


def after_run(run: claims.Run, a: claims.AfterRun, steps: int, log: Path) -> int:
  """One after-run command; its stdout is kept (atomically) only if it exits 0 with JSON."""
  out = claims.after_path(run.workdir, a)
  if (claims.read_after(run.workdir, a.name) or {}).get("step") == steps:
    return 0
  tmp = out.with_suffix(f".json.{os.getpid()}.tmp")
  try:
    with open(tmp, "w") as f:
      rc = run_logged(run.after_argv(a), log, stdout=f)
    try:
      json.loads(tmp.read_text())
    except json.JSONDecodeError:
      rc = rc or 1
    if rc == 0:
      tmp.replace(out)
    return rc
  finally:
    tmp.unlink(missing_ok=True)


def tail(log: Path, n: int = 5) -> str:
  try:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
  except OSError:
    return ""
  return "\n".join("      " + ln[-200:] for ln in lines[-n:])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("row", help="configs/repro_<row>.py")
  p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the row's)")
  p.add_argument("--runs", type=Path, default=claims.DEFAULT_RUNS, help="runs root (default runs/repro)")
  p.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, run nothing")
  p.add_argument("overrides", nargs="*", help="key.path=value, applied to every run")
  args = p.parse_intermixed_args(argv)     # flags may come after key=value overrides
  if args.seeds is not None and args.seeds < 1:
    p.error("--seeds must be at least 1")
  row = claims.load_row(args.row)
  runs = claims.plan(row, args.seeds, args.runs.absolute(), tuple(args.overrides))
  try:
    steps = {r.name: r.config().train.steps for r in runs}  # a bad override fails here, first
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  logs = args.runs.absolute() / row.name / "logs"

  print(f"{row.title}: {len(runs)} runs ({len(row.variants)} variants x "
        f"{args.seeds or row.seeds} seeds) into {args.runs / row.name}; every run: "
        f"{' '.join((*row.overrides, *args.overrides))}")
  total = 0.0
  for r in runs:
    state, _ = status(r, steps[r.name])
    est = estimate_s(row, r, steps[r.name])
    total += est
    print(f"  {r.name:<24} {steps[r.name]:>5} steps  {state:<20} ~{fmt_s(est):>7}  "
          f"{r.variant.config} {' '.join((*r.variant.overrides, f'train.seed={r.seed}'))}")
  print(f"estimate: ~{fmt_s(total)} (the row's measured speeds: {row.budget})", flush=True)
  if args.dry_run:
    return 0

  failed, commit = [], claims.git_commit()
  for i, r in enumerate(runs, 1):
    n = steps[r.name]
    state, _ = status(r, n)
    if state == "done":
      continue
    log = logs / f"{r.name}.log"
    print(f"[{i}/{len(runs)}] {r.name}: {state} (log {log})", flush=True)
    t0 = time.time()
    try:
      if not claims.train_done(r.workdir, n):
        rc = run_logged(r.train_argv(), log)
        if rc == 130:
          raise KeyboardInterrupt
        if rc == 0 and not claims.train_done(r.workdir, n):
          rc = -1     # exit 0 without the final step: preempted (SIGTERM) or stopped
        if rc:
          failed.append(r.name)
          print(f"  FAILED: train.py exit {rc}\n{tail(log)}", flush=True)
          continue
      for a in r.variant.after:
        rc = after_run(r, a, n, log)
        if rc == 130:
          raise KeyboardInterrupt
        if rc:
          failed.append(f"{r.name} ({a.name})")
          print(f"  FAILED: {' '.join(a.argv)} exit {rc}\n{tail(log)}", flush=True)
          break
      else:
        info = {"commit": commit, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
                "wall_s": round(time.time() - t0, 1), "argv": r.train_argv("python")}
        (r.workdir / "repro.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"  done in {fmt_s(time.time() - t0)}", flush=True)
    except KeyboardInterrupt:
      print(f"\ninterrupted at {r.name}: rerun the same command to continue", flush=True)
      return 130
  if failed:
    print(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}; rerun the command to "
          "retry them (complete runs are skipped)")
    return 1
  print(f"all {len(runs)} runs complete; now: python benchmarks/results.py"
        + (f" --runs {args.runs}" if args.runs.absolute() != claims.DEFAULT_RUNS else "")
        + (f" --seeds {args.seeds}" if args.seeds else "")
        + "".join(f" {o}" for o in args.overrides))
  return 0


if __name__ == "__main__":
  sys.exit(main())
