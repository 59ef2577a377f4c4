"""Where the time of configs/shakespeare_char.py's train step goes, on this host.

    python benchmarks/shakespeare_char_profile.py --data input.txt \
        [--steps 20] [--windows 8] [--variant "model.gelu_exact=true"]

Two views of the config's own compiled step (its CPU set-up, as train.py resolves it):

1. Trace. --steps steps under jax.profiler with XLA:CPU's per-op trace events on; each op's time is
   given to the model part that emitted it, read from the optimised HLO's op_name metadata
   (forward / backward x embeddings, attention projections, attention kernel, MLP, norms, loss,
   optimizer), and to its kind (dot, copy/transpose, reduction, C++ kernel, other elementwise).
   Times are summed over the XLA threads, per step; the profiler itself slows the step, so read
   the shares.
2. Ablation (wall time, the profiler off). The step as it is, against the same step with the
   attention kernel replaced by a nearly free stand-in (q plus k + v summed over the KV heads): the
   difference is what the kernel costs in wall time. Windows of 25 steps alternate between the two;
   min and median per step.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import statistics
import tempfile

# Before JAX starts: XLA:CPU records per-op trace events only with this flag.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import shakespeare_char as bench  # noqa: E402  (this folder's speed benchmark; puts the repo root on sys.path)

import jax  # noqa: E402

import kernels  # noqa: E402
from configs import base  # noqa: E402
from training import platform_cpu  # noqa: E402

WINDOW = 25
COLLECTIVES = r"(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"


def part_of(op_name: str) -> str:
  """Model part of an HLO op, from its op_name metadata (jit(train_step)/...)."""
  where = "bwd" if "transpose(jvp(" in op_name else "fwd"
  if "DecoderLM" not in op_name:
    return "loss (fwd+bwd)" if "jvp(" in op_name else "optimizer, clipping, skip"
  if "/attn/" in op_name:
    if re.search(r"/(query|key|value)/", op_name):
      return f"{where} attention q/k/v projections"
    return f"{where} attention output projection" if "/out/" in op_name else f"{where} attention kernel"
  for key, name in (("/mlp/", "MLP"), ("norm", "norms"), ("/embed", "embeddings"), ("/pos", "embeddings")):
    if key in op_name:
      return f"{where} {name}"
  return f"{where} other"


def kind_of(event: str) -> str:
  if re.match(COLLECTIVES, event):
    return "collectives"
  if event.startswith(("ynn_fusion", "dot")):
    return "dots"
  if event.startswith("custom-call"):
    return "C++ kernels"
  if "copy" in event or "transpose" in event:
    return "copies/transposes"
  return "reductions" if "reduce" in event else "elementwise"


def op_parts(hlo_text: str) -> dict[str, str]:
  """HLO op -> model part; ops that XLA made without op_name (e.g. its tree-reduction rewrite's
  reduce-windows) are 'unattributed'."""
  entry = hlo_text[hlo_text.index("\nENTRY"):]
  parts = {}
  for line in entry.split("\n"):
    m = re.match(r"\s+(?:ROOT )?%([\w.\-]+) = ", line)
    if not m:
      continue
    op = re.search(r'op_name="([^"]*)"', line)
    if re.search(rf"[ )]{COLLECTIVES}(-start)?\(", line):   # the opcode
      parts[m.group(1)] = "collectives (waits included)"   # op_name: whichever op XLA combined first
    else:
      parts[m.group(1)] = part_of(op.group(1)) if op else "unattributed (no op_name)"
  return parts


def trace(ours, steps: int):
  """ms per step by (part, kind), summed over XLA:CPU's threads."""
  parts = op_parts(ours.step.as_text())
  ours.run(5)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      ms_step = ours.run(steps) * 1e3
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
  ns = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        name = re.sub(r"^end: ", "", ev.name)
        if name in parts:
          ns[parts[name], kind_of(name)] += ev.duration_ns
  return ms_step, {k: v / steps / 1e6 for k, v in ns.items()}


def ablate(cfg, overrides, windows: int):
  """Wall ms/step of the step as it is and with the attention kernel replaced by a nearly free
  stand-in: q + k + v, summed over the KV heads so that GQA shapes broadcast too."""
  real = bench.Ours(cfg, overrides)
  original = kernels.attention
  kernels.attention = lambda q, k, v, **kw: q + (k + v).sum(axis=2, keepdims=True)
  try:
    free = bench.Ours(cfg, overrides)
  finally:
    kernels.attention = original
  times = {"as configured": [], "attention kernel nearly free": []}
  for _ in range(windows):
    for name, o in zip(times, (real, free)):
      times[name].append(o.run(WINDOW) * 1e3)
  return times


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("--steps", type=int, default=20, help="steps under the profiler")
  p.add_argument("--windows", type=int, default=8, help="ablation windows of 25 steps per contender")
  p.add_argument("--variant", default="", help="space-separated config overrides")
  args = p.parse_args()
  overrides = args.variant.split()
  cfg = base.load(str(bench.ROOT / "configs/shakespeare_char.py"), [f"data.path={args.data}", *overrides])
  platform_cpu.configure(cfg.mesh.cpu_devices)
  platform_cpu.start()
  print(f"host CPU: {platform_cpu.cpu_info().get('model name', '?')}; model.matmul_dtype="
        f"{cfg.model.matmul_dtype} mesh.cpu_devices={cfg.mesh.cpu_devices}"
        + (f" (overrides: {args.variant})" if args.variant else ""), flush=True)

  ms_step, table = trace(bench.Ours(cfg, overrides), args.steps)
  total = sum(table.values())
  kinds = sorted({k for _, k in table})
  by_part = collections.Counter()
  for (part, _), ms in table.items():
    by_part[part] += ms
  print(f"\n1. trace: {ms_step:.1f} ms/step under the profiler; {total:.1f} ms of op time per step "
        f"over all threads")
  print(f"{'part':<36}{'ms':>7}{'share':>7}" + "".join(f"{k:>19}" for k in kinds))
  for part, ms in by_part.most_common():
    print(f"{part:<36}{ms:7.2f}{ms / total:7.1%}" + "".join(f"{table.get((part, k), 0):19.2f}" for k in kinds))
  print(f"{'all':<36}{total:7.2f}{1:7.1%}" +
        "".join(f"{sum(v for (_, kk), v in table.items() if kk == k):19.2f}" for k in kinds))

  times = ablate(cfg, overrides, args.windows)
  print(f"\n2. ablation, wall ms/step ({args.windows} alternating windows of {WINDOW} steps)")
  for name, t in times.items():
    print(f"{name:<36} min {min(t):6.1f}  median {statistics.median(t):6.1f}")
  for stat in (min, statistics.median):
    a, b = (stat(t) for t in times.values())
    print(f"attention kernel ({stat.__name__}): {a - b:.1f} ms of {a:.1f} ms per step ({(a - b) / a:.0%})")


if __name__ == "__main__":
  main()
