"""SSM scans on this CPU: the chunked "xla" paths vs the per-token lax.scan oracles.

  python benchmarks/bench_ssm.py
Rows (all f32, jitted, min of `repeats` timed calls after a warm-up, both sides in one run):
  ssd             B=1 T=4096 H=8 P=64 N=64 G=1, chunk 64 (a Mamba-2 layer's shape per device)
  selective_scan  B=1 T=4096 D=512 N=16, chunk 64 (a slice of a Mamba-1 layer: d_inner 512)
  selective_scan  the rejected alternative: associative scan within chunks (autodiff backward)
fwd = forward only; fwd+bwd = grad of a scalar loss w.r.t. every input. Memory: XLA's compiled
temp-buffer size (a relative, CPU-only metric; XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
stops XLA:CPU from hiding dot intermediates in fusions).
"""
from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kernels.selective_scan import reference as ss_ref  # noqa: E402
from kernels.selective_scan.api import selective_scan  # noqa: E402
from kernels.ssd import reference as ssd_ref  # noqa: E402
from kernels.ssd.api import ssd  # noqa: E402


def _ssd_inputs(B, T, H, P, G, N, seed=0):
  rng = np.random.default_rng(seed)
  n = lambda *s: rng.standard_normal(s)
  return tuple(jnp.asarray(a, jnp.float32) for a in (
      n(B, T, H, P), np.logaddexp(0, n(B, T, H) - 2), -np.exp(n(H)), n(B, T, G, N) / 8,
      n(B, T, G, N) / 8))


def _ss_inputs(B, T, D, N, seed=0):
  rng = np.random.default_rng(seed)
  n = lambda *s: rng.standard_normal(s)
  return tuple(jnp.asarray(a, jnp.float32) for a in (
      n(B, T, D), np.logaddexp(0, n(B, T, D) - 2), -np.exp(n(D, N)), n(B, T, N), n(B, T, N)))


def _assoc_chunked(u, delta, A, B, C, chunk=64):
  """Alternative kept for the record: per-chunk associative scan over (decay, input) pairs,
  a scan over chunks for the carry, autodiff backward. Vectorised, but moves several
  [B, T, D, N] tensors through memory."""
  Bsz, T, D = u.shape
  split = lambda v: v.reshape(Bsz, T // chunk, chunk, *v.shape[2:])
  u_, d_, B_, C_ = map(split, (u, delta, B, C))
  a = jnp.exp(d_[..., None] * A)
  b = (d_ * u_)[..., None] * B_[:, :, :, None, :]
  a_cum, x = jax.lax.associative_scan(lambda l, r: (r[0] * l[0], r[0] * l[1] + r[1]), (a, b),
                                      axis=2)

  def carry(h, inputs):
    return inputs[0] * h + inputs[1], h

  hT, h_in = jax.lax.scan(carry, jnp.zeros((Bsz, D, A.shape[1])),
                          (jnp.moveaxis(a_cum[:, :, -1], 1, 0), jnp.moveaxis(x[:, :, -1], 1, 0)))
  x = x + a_cum * jnp.moveaxis(h_in, 0, 1)[:, :, None]
  return jnp.einsum("bcldn,bcln->bcld", x, C_).reshape(Bsz, T, D), hT


def _compile_and_time(fn, args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))  # warm-up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
  return best * 1e3, compiled.memory_analysis().temp_size_in_bytes / 2**20


def _fwd_bwd(f, n_args=5):
  def loss(*a):
    y, s = f(*a)
    return jnp.sum(y ** 2) + jnp.sum(s ** 2)
  return jax.grad(loss, argnums=tuple(range(n_args)))


def _compare(kernel, case, baseline_name, baseline, candidates, args, repeats):
  """One row per (mode, candidate); the baseline is timed once per mode."""
  out = []
  for mode in ("fwd", "fwd+bwd"):
    wrap = (lambda f: f) if mode == "fwd" else _fwd_bwd
    b_ms, b_mib = _compile_and_time(wrap(baseline), args, repeats)
    for name, fn in candidates:
      c_ms, c_mib = _compile_and_time(wrap(fn), args, repeats)
      out.append(dict(
          kernel=kernel, case=f"{mode} {case} {name}", baseline=baseline_name,
          ratio=round(b_ms / c_ms, 2), candidate_ms=round(c_ms, 1), baseline_ms=round(b_ms, 1),
          candidate_temp_MiB=round(c_mib, 1), baseline_temp_MiB=round(b_mib, 1),
          note=f"CPU/XLA, f32, jitted, min of {repeats}; ratio = baseline / candidate time"))
  return out


def rows(repeats=3) -> list[dict]:
  B, T, H, P, G, N = 1, 4096, 8, 64, 1, 64
  out = _compare(
      "ssd", f"B={B} T={T} H={H} P={P} G={G} N={N}", "per-token lax.scan (ssd_naive)",
      ssd_ref.ssd_naive,
      [("chunked impl='xla' C=64", lambda *a: ssd(*a, chunk_size=64, impl="xla"))],
      _ssd_inputs(B, T, H, P, G, N), repeats)
  B, T, D, N = 1, 4096, 512, 16
  out += _compare(
      "selective_scan", f"B={B} T={T} D={D} N={N}",
      "per-token lax.scan (selective_scan_naive)", ss_ref.selective_scan_naive,
      [("chunked impl='xla' C=64", lambda *a: selective_scan(*a, chunk_size=64, impl="xla")),
       ("associative-scan-in-chunks C=64 (rejected)", _assoc_chunked)],
      _ss_inputs(B, T, D, N), repeats)
  return out


if __name__ == "__main__":
  print(f"jax {jax.__version__}, devices {jax.devices()}")
  for r in rows():
    print(r, flush=True)
