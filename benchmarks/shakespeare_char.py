"""Tokens/s of configs/shakespeare_char.py's train step, optionally against nanoGPT, in one run.

    python benchmarks/shakespeare_char.py --data input.txt \
        [--nanogpt /path/to/nanoGPT --torch-python /path/to/python-with-torch] [--rounds 3 --steps 100]
        [--variant model.scan_layers=false ...]

The config's CPU set-up applies (mesh.cpu_devices JAX devices, XLA:CPU flags), as in train.py.
Each round times every seqzoo variant for --steps steps (the real loop: host batch → sharded array →
compiled step, throughput over the whole window) and, with --nanogpt, runs nanoGPT's CPU "baby"
command for --steps iterations (its own per-iteration times, median). Rounds interleave the contenders,
so a busy machine slows them alike; the printed ratios are what to read, not the absolute numbers.
nanoGPT is not part of this project: point --nanogpt at your own checkout.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import modelzoo  # noqa: E402
from configs import base  # noqa: E402
from data import pipeline, tokenize  # noqa: E402
from layers import sharding  # noqa: E402
from training import distributed, platform_cpu  # noqa: E402
from training import metrics as metrics_lib  # noqa: E402
from training import step as step_lib  # noqa: E402

NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=1",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--lr_decay_iters=2000", "--dropout=0.0", "--eval_interval=1000000",
                "--always_save_checkpoint=False"]


class Ours:
  """One compiled seqzoo train step and its data iterator."""

  def __init__(self, cfg, overrides: list[str]):
    base.validate(cfg, jax.device_count())
    self.cfg, self.name = cfg, " ".join(overrides) or "default"
    tok = tokenize.build_tokenizer(cfg.data, None)
    self.it = pipeline.build_dataset(cfg.data, tok, "train", batch_size=cfg.train.batch_size, seed=0)
    model = modelzoo.build(cfg.model)
    tx, schedule = step_lib.make_optimizer(cfg.train)
    mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
    make, rng, abstract, state_sh = step_lib.init_state(model, tx, cfg, mesh)
    self.b_sh = sharding.batch_sharding(mesh)
    spec = {k: jax.ShapeDtypeStruct((cfg.train.batch_size, cfg.data.seq_len), d, sharding=self.b_sh)
            for k, d in step_lib.BATCH_DTYPES.items()}
    with sharding.activate(mesh):
      self.step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg), donate_argnums=(0,),
                          in_shardings=(state_sh, self.b_sh),
                          out_shardings=(state_sh, None)).lower(abstract, spec).compile()
    self.state = make(rng)
    self.n_params = metrics_lib.param_count(self.state.params)
    self.tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    self.run(10)  # warm up

  def run(self, steps: int) -> float:
    """Seconds per step, averaged over the window (one device sync at the end)."""
    t = time.perf_counter()
    for _ in range(steps):
      self.state, m = self.step(self.state, distributed.to_global(next(self.it), self.b_sh))
    jax.block_until_ready(m)
    return (time.perf_counter() - t) / steps


def nanogpt_step_seconds(nanogpt: Path, python: str, data_path: str, steps: int) -> float:
  """Median iteration time of nanoGPT's baby run (prepares its char dataset once, from data_path)."""
  d = nanogpt / "data" / "shakespeare_char"
  if not (d / "train.bin").exists():
    shutil.copy(data_path, d / "input.txt")
    r = subprocess.run([python, "prepare.py"], cwd=d, capture_output=True, text=True)
    if r.returncode:   # e.g. nanoGPT's prepare.py imports `requests`, even with input.txt present
      sys.exit(f"{python} prepare.py in {d} failed:\n{r.stderr[-2000:]}")
  with tempfile.TemporaryDirectory() as out:
    r = subprocess.run([python, "train.py", *NANOGPT_ARGS, f"--max_iters={steps + 5}", f"--out_dir={out}"],
                       cwd=nanogpt, check=True, capture_output=True, text=True)
  ms = [float(x) for i, x in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", r.stdout)
        if int(i) >= 5]
  return statistics.median(ms) / 1e3


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", required=True)
  p.add_argument("--nanogpt", type=Path, default=None)
  p.add_argument("--torch-python", default=sys.executable)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--variant", action="append", default=None,
                 help="space-separated overrides; repeat for several (default: the config as is)")
  args = p.parse_args()
  overrides = [v.split() for v in (args.variant or [""])]
  cfgs = [base.load(str(ROOT / "configs/shakespeare_char.py"), [f"data.path={args.data}", *o])
          for o in overrides]
  cpu_devices = {c.mesh.cpu_devices for c in cfgs}
  if len(cpu_devices) > 1:   # one JAX backend per process
    sys.exit(f"variants differ in mesh.cpu_devices ({sorted(cpu_devices)}): run them separately")
  platform_cpu.configure(cpu_devices.pop())      # as train.py does, before JAX starts
  platform_cpu.start()                             # as train.py: the C++ attention kernel
  print(f"host CPU: {platform_cpu.cpu_info().get('model name', '?')}; " + "; ".join(
      f"{' '.join(o) or 'default'}: model.matmul_dtype={c.model.matmul_dtype} "
      f"mesh.cpu_devices={c.mesh.cpu_devices}" for c, o in zip(cfgs, overrides)), flush=True)
  variants = [Ours(c, o) for c, o in zip(cfgs, overrides)]
  times = {v.name: [] for v in variants}
  if args.nanogpt:
    times["nanoGPT (PyTorch)"] = []
  for r in range(args.rounds):
    for v in variants:
      times[v.name].append(v.run(args.steps))
    if args.nanogpt:
      times["nanoGPT (PyTorch)"].append(
          nanogpt_step_seconds(args.nanogpt, args.torch_python, args.data, args.steps))
    print(f"round {r + 1}: " + ", ".join(f"{k} {1e3 * t[-1]:.1f} ms" for k, t in times.items()),
          flush=True)
  tokens = variants[0].tokens_per_step
  flops = modelzoo.flops_per_token(variants[0].cfg.model, variants[0].n_params,
                                   variants[0].cfg.data.seq_len) * tokens
  peak = platform_cpu.host_peak()
  ref = min(times.get("nanoGPT (PyTorch)", [float("nan")]))
  print(f"\n{'contender':<34} {'ms/step':>8} {'tokens/s':>9} {'MFU':>6} {'vs nanoGPT':>10}")
  for k, t in times.items():
    best = min(t)
    print(f"{k:<34} {1e3 * best:8.1f} {tokens / best:9.0f} {flops / best / peak:6.1%} "
          f"{ref / best:9.2f}x")
  print(f"(best of {args.rounds} rounds of {args.steps} steps; {tokens} tokens/step; "
        f"MFU against the host's measured peak, f32 matmul, {peak / 1e9:.0f} GFLOP/s)")


if __name__ == "__main__":
  main()
