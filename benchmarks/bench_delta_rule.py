"""Chunked delta rule (impl="xla", the CPU path) vs the per-token lax.scan recurrence, on this CPU.

Ratios are measured in one run, both sides jitted, min over `repeats` timed calls after a warm-up.
  python benchmarks/bench_delta_rule.py            # T=4096, B=1, H=4, dk=dv=64, f32
Memory: XLA's compiled temp-buffer size for the same programs (a relative, CPU-only metric; set
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= to stop XLA:CPU hiding dot intermediates).
"""
from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kernels.delta_rule import reference  # noqa: E402
from kernels.delta_rule.api import delta_rule  # noqa: E402

BASELINE = "per-token lax.scan (reference.delta_rule_naive)"


def _inputs(B, T, H, D, gated, seed=0):
  rng = np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  q, k = (unit(rng.standard_normal((B, T, H, D))) for _ in range(2))
  v = rng.standard_normal((B, T, H, D))
  beta = 1 / (1 + np.exp(-rng.standard_normal((B, T, H))))
  g = -np.log1p(np.exp(-rng.standard_normal((B, T, H)) - 4.0)) if gated else None
  s0 = np.zeros((B, H, D, D))
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  return tuple(map(f32, (q, k, v, beta, g, s0)))


def _compile_and_time(fn, args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))  # warm-up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
  temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
  return best * 1e3, temp


def _programs(gated, chunk_size):
  """{mode: (chunked, naive)}; ungated functions take no g and pass g=None to the API."""
  if gated:
    chunked = lambda q, k, v, b, g, s0: delta_rule(q, k, v, b, g, initial_state_BHKV=s0,
                                                   chunk_size=chunk_size, impl="xla")
    naive = lambda q, k, v, b, g, s0: reference.delta_rule_naive(q, k, v, b, g, s0)
  else:
    chunked = lambda q, k, v, b, s0: delta_rule(q, k, v, b, initial_state_BHKV=s0,
                                                chunk_size=chunk_size, impl="xla")
    naive = lambda q, k, v, b, s0: reference.delta_rule_naive(q, k, v, b, None, s0)

  def fwd_bwd(f):
    def loss(*a):
      o, s = f(*a)
      return jnp.sum(o ** 2) + jnp.sum(s ** 2)
    return jax.grad(loss, argnums=tuple(range(6 if gated else 5)))

  return {"fwd": (chunked, naive), "fwd+bwd": (fwd_bwd(chunked), fwd_bwd(naive))}


def rows(B=1, T=4096, H=4, D=64, repeats=3) -> list[dict]:
  """Gated and ungated, fwd and fwd+bwd, at the API default chunk 64; gated also at chunk 16
  (cheaper forward substitution and intra-chunk work, more scan steps). The baseline is timed
  once per (gating, mode) and shared by the chunk sizes."""
  out = []
  for gated, chunk_sizes in ((True, (64, 16)), (False, (64,))):
    args = _inputs(B, T, H, D, gated)
    args = args if gated else args[:4] + args[5:]
    for mode in ("fwd", "fwd+bwd"):
      n_ms = n_mib = None
      for C in chunk_sizes:
        chunked, naive = _programs(gated, C)[mode]
        if n_ms is None:
          n_ms, n_mib = _compile_and_time(naive, args, repeats)
        c_ms, c_mib = _compile_and_time(chunked, args, repeats)
        out.append(dict(
            kernel="delta_rule",
            case=f"{mode} {'gated' if gated else 'ungated'} B={B} T={T} H={H} dk=dv={D} f32 C={C}",
            baseline=BASELINE, ratio=round(n_ms / c_ms, 2),
            chunked_ms=round(c_ms, 1), baseline_ms=round(n_ms, 1),
            chunked_temp_MiB=round(c_mib, 1), baseline_temp_MiB=round(n_mib, 1),
            note=f"CPU/XLA impl='xla', jitted, min of {repeats}; ratio = baseline / chunked time"))
  return out


if __name__ == "__main__":
  print(f"jax {jax.__version__}, devices {jax.devices()}")
  for r in rows():
    print(r, flush=True)
