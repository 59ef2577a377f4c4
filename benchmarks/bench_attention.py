"""Softmax (and sigmoid) attention on this CPU: the blockwise jnp path (FA2 in XLA, impl="xla"), the
C++ CPU kernel (softmax only; what impl="auto" runs here) and the interpreted Pallas TPU kernels
(impl="interpret") vs the materialised attention ("naive"), all causal, f32, default block sizes.

  python benchmarks/bench_attention.py           # speed table + memory table (~5 min on 2 cores)
  python benchmarks/bench_attention.py --memory  # memory table only (compile only, ~1 min)

Speed: ratios measured in one run, every program jitted, min over `repeats` timed calls after a
warm-up; ratio = naive time / other time (> 1: the other is faster).
Memory: XLA's compiled temp-buffer size of jit(grad) (compilation only, nothing is executed, so
T = 32k naive is fine). It is measured in a subprocess with XLA_FLAGS=
--xla_cpu_experimental_ynn_fusion_type= because XLA:CPU's YNNPACK fusion otherwise hides the naive
[T, S] intermediates (reports 0). A relative, CPU-only metric, not a TPU/GPU HBM prediction.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kernels._attn_common import Spec  # noqa: E402
from kernels.attention import api, cpu, pallas_tpu  # noqa: E402
from kernels.attention.reference import blockwise, naive  # noqa: E402

NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
# (B, T, H, D): the CPU training shapes (T0 recipe: B=16, T=128, 4 heads of 32) up to long T.
SPEED_CASES = [(16, 128, 4, 32), (8, 256, 4, 32), (2, 512, 4, 64), (1, 1024, 4, 64),
               (1, 2048, 4, 64), (1, 4096, 2, 64)]
SIGMOID_CASES = [(8, 256, 4, 32), (1, 2048, 4, 64)]
INTERPRET_MAX_T = 2048   # interpreted Pallas is timed up to here
MEMORY_TS = (8192, 16384, 32768)
MEMORY_SHAPE = (1, 2, 64)   # B, H, D


def _programs(T, D, mode, kind="softmax"):
  spec = Spec(kind, True, None, D ** -0.5, None, -float(np.log(T)) if kind == "sigmoid" else 0.0,
              T, T)
  fns = {"naive": lambda q, k, v: naive(q, k, v, spec),
         "blockwise": lambda q, k, v: blockwise(q, k, v, spec),
         "cpu": lambda q, k, v: cpu.attention(spec, q, k, v),
         "pallas_interpret": lambda q, k, v: api.pallas(pallas_tpu, spec, (None, None), True,
                                                        q, k, v, None, None)}
  if mode == "fwd":
    return fns
  grad = lambda f: jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2))
  return {name: grad(f) for name, f in fns.items()}


def _time(fn, args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
  return best * 1e3


def speed_rows(repeats=5) -> list[dict]:
  out = []
  rng = np.random.default_rng(0)
  cases = [(c, "softmax") for c in SPEED_CASES] + [(c, "sigmoid") for c in SIGMOID_CASES]
  for (B, T, H, D), kind in cases:
    args = [jnp.asarray(rng.standard_normal((B, T, H, D), np.float32)) for _ in range(3)]
    for mode in ("fwd", "fwd+bwd"):
      progs = _programs(T, D, mode, kind)
      names = (["naive", "blockwise"] + (["cpu"] if kind == "softmax" else [])
               + (["pallas_interpret"] if T <= INTERPRET_MAX_T else []))
      ms = {name: _time(progs[name], args, repeats) for name in names}
      for name in names[1:]:
        out.append(dict(kernel="attention" if kind == "softmax" else "sigmoid_attention",
                        case=f"{mode} B={B} T={T} H={H} D={D}",
                        baseline="naive (materialised, XLA)", impl=name,
                        ms=round(ms[name], 2), baseline_ms=round(ms["naive"], 2),
                        ratio=round(ms["naive"] / ms[name], 2),
                        note="causal f32; ratio = naive/impl time (>1 faster), same run"))
  return out


def _memory_worker():
  """Runs in the subprocess (flag set before jax initialises): prints {T: [blockwise, naive]}."""
  B, H, D = MEMORY_SHAPE
  res = {}
  for T in MEMORY_TS:
    x = jax.ShapeDtypeStruct((B, T, H, D), jnp.float32)
    progs = _programs(T, D, "fwd+bwd")
    res[T] = [jax.jit(progs[n]).trace(x, x, x).lower().compile().memory_analysis()
              .temp_size_in_bytes / 2**20 for n in ("blockwise", "naive")]
  print(json.dumps(res))


def memory_rows() -> list[dict]:
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + NO_YNN).strip(),
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, __file__, "--memory-worker"], env=env, check=True,
                        capture_output=True, text=True)
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  B, H, D = MEMORY_SHAPE
  out = []
  for T, (bw, nv) in res.items():
    out.append(dict(kernel="attention", case=f"fwd+bwd temp memory B={B} T={T} H={H} D={D}",
                    baseline="naive (materialised, XLA)", impl="blockwise",
                    temp_MiB=round(bw, 1), baseline_temp_MiB=round(nv, 1),
                    ratio=round(bw / nv, 4),
                    note=f"compiled temp_size_in_bytes, XLA_FLAGS={NO_YNN}; ratio = impl/naive"))
  return out


def rows() -> list[dict]:
  return memory_rows() + speed_rows()


if __name__ == "__main__":
  cpu.load()                  # the C++ kernel, as the CPU platform's start-up loads it
  if "--memory-worker" in sys.argv:
    _memory_worker()
  else:
    for row in (memory_rows() if "--memory" in sys.argv else rows()):
      print(row)
