"""Mamba-2 SSD on this CPU: kernels.ssd impl="xla" vs the minimal SSD in torch (mamba's CPU reference).

  python benchmarks/bench_ssd_vs_mamba.py [--threads 1] [--T 4096 --H 8 --P 64 --N 64 --G 1 --chunk 64]

Both sides compute y, final_state = SSD(x, dt, A, B, C) from a zero initial state, by default at
B=1 T=4096 H=8 P=64 N=64 G=1, chunk 64, float32, from the same inputs. fwd+bwd is the forward plus
the vector-Jacobian product with the same random cotangents (dy, dstate): gradients w.r.t. x, dt,
A, B and C on both sides (checked equal before timing: the last row). The two programs are timed
interleaved (jax, torch, jax, torch, ...) after a warm-up, each time the min over `repeats`
calls; ratio = torch time / jax time. JAX runs under the XLA:CPU flags train.py sets
(training/platform_cpu.py). Threads: by default every core for both (XLA:CPU's pool, and
torch.set_num_threads), wall time; with --threads 1, one thread each and this process's CPU time,
which other jobs on a shared machine disturb far less (torch's OpenMP threads lose most to them).

The torch side, `ssd_minimal_torch` below, is the minimal SSD algorithm of the Mamba-2 paper
(arXiv:2405.21060, §6 and its Listing 1), written here from the paper's maths: per chunk the
"diagonal block" output (C Bᵀ ∘ exp(segsum(dt·A))) (dt x), the chunk states, the inter-chunk
recurrence as one matrix of decays between chunk boundaries, and the read-out of the entering
state by C; autograd for the backward. It takes the same steps with the same torch ops as
mamba_ssm.modules.ssd_minimal.ssd_minimal_discrete (state-spaces/mamba, as in the mamba-ssm
2.3.2.post1 sdist; the stable segsum is a masked cumsum of an L×L broadcast), and was checked
against that function itself, called with X = x·dt and A = A·dt: outputs and all five gradients
equal bit for bit (max abs difference 0.0) in float32 and float64, at this shape and at two
small ones with G = 3 of H = 6 and G = H = 4; timings equal within the noise of a shared machine.
mamba_ssm is not needed to run this file (its package imports CUDA/Triton kernels at import).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from anywhere

from training import platform_cpu

# Before JAX starts: the XLA:CPU flags train.py runs with, and with --threads 1 one thread.
THREADS = os.cpu_count()
if "--threads" in sys.argv:
  THREADS = int(sys.argv[sys.argv.index("--threads") + 1])
if THREADS == 1:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                             " intra_op_parallelism_threads=1").strip()
platform_cpu.configure(1)

import jax
import jax.numpy as jnp
import numpy as np
import torch

from kernels.ssd.api import ssd


def _segsum(a):
  """[..., L] -> [..., L, L]: entry (l, s) = a_{s+1} + ... + a_l for s <= l, -inf above the
  diagonal. Summed as a masked cumsum of the broadcast (no difference of two long cumsums, which
  would lose precision), as in the paper's listing."""
  L = a.shape[-1]
  below = torch.tril(torch.ones(L, L, dtype=torch.bool), diagonal=-1)
  seg = torch.cumsum(a[..., :, None].expand(*a.shape, L).masked_fill(~below, 0.0), dim=-2)
  return seg.masked_fill(~torch.tril(torch.ones(L, L, dtype=torch.bool)), -torch.inf)


def ssd_minimal_torch(x, dt, A, B, C, chunk):
  """x [b,T,h,p], dt [b,T,h], A [h], B/C [b,T,g,n] (g = 1 is broadcast over heads), T % chunk == 0.
  Returns (y [b,T,h,p], final state [b,h,p,n]) of h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_tᵀ,
  y_t = h_t C_t from a zero state."""
  b, T, h, p = x.shape
  nc = T // chunk
  to_chunks = lambda t: t.reshape(b, nc, chunk, *t.shape[2:])
  X = to_chunks(x * dt[..., None])                           # b c l h p
  a = to_chunks(dt * A).permute(0, 3, 1, 2)                   # b h c l
  if 1 < B.shape[2] < h:                                      # groups: each head its group's
    B, C = (t.repeat_interleave(h // t.shape[2], dim=2) for t in (B, C))
  Bc, Cc = to_chunks(B), to_chunks(C)                         # b c l g n
  a_cum = torch.cumsum(a, dim=-1)
  # 1. within each chunk
  decay = torch.exp(_segsum(a))                               # b h c l s
  y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, decay, X)
  # 2. each chunk's state, seen from its end
  to_end = torch.exp(a_cum[..., -1:] - a_cum)                 # b h c l
  states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, to_end, X)
  # 3. across chunks: the state entering chunk c is a decayed sum of earlier chunks' states
  states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
  across = torch.exp(_segsum(torch.nn.functional.pad(a_cum[..., -1], (1, 0))))  # b h z c
  states = torch.einsum("bhzc,bchpn->bzhpn", across, states)
  # 4. the entering state, decayed to each position and read out by C
  y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states[:, :-1], torch.exp(a_cum))
  return y.reshape(b, T, h, p), states[:, -1]


def _inputs(Bsz, T, H, P, G, N, seed=0):
  rng = np.random.default_rng(seed)
  n = lambda *s: rng.standard_normal(s).astype(np.float32)
  args = (n(Bsz, T, H, P), np.logaddexp(0, n(Bsz, T, H) - 2).astype(np.float32),
          -np.exp(n(H)), n(Bsz, T, G, N) / 8, n(Bsz, T, G, N) / 8)
  cts = (n(Bsz, T, H, P), n(Bsz, H, P, N))
  return args, cts


def _jax_programs(chunk):
  f = lambda *a: ssd(*a, chunk_size=chunk, impl="xla")

  def fwd_bwd(args, cts):
    out, vjp = jax.vjp(f, *args)
    return out, vjp(cts)

  return jax.jit(f), jax.jit(fwd_bwd)


def _torch_programs(chunk):
  def fwd(args):
    with torch.no_grad():
      return ssd_minimal_torch(*args, chunk)

  def fwd_bwd(args, cts):
    args = [a.detach().requires_grad_() for a in args]
    out = ssd_minimal_torch(*args, chunk)
    torch.autograd.backward(out, cts)
    return out, [a.grad for a in args]

  return fwd, fwd_bwd


def _time(call, sync):
  """Wall time; with one thread, this process's CPU time (less sensitive to other jobs)."""
  clock = time.process_time if THREADS == 1 else time.perf_counter
  t0 = clock()
  sync(call())
  return clock() - t0


def run(Bsz=1, T=4096, H=8, P=64, N=64, G=1, chunk=64, repeats=5) -> list[dict]:
  torch.set_num_threads(THREADS)
  args, cts = _inputs(Bsz, T, H, P, G, N)
  j_args, j_cts = tuple(map(jnp.asarray, args)), tuple(map(jnp.asarray, cts))
  t_args, t_cts = tuple(map(torch.from_numpy, args)), tuple(map(torch.from_numpy, cts))
  j_fwd, j_fb = _jax_programs(chunk)
  t_fwd, t_fb = _torch_programs(chunk)
  j_sync = jax.block_until_ready
  t_sync = lambda out: out

  # Same answers (forward and gradients), before any timing.
  (jy, js), jg = j_fb(j_args, j_cts)
  (ty, ts), tg = t_fb(t_args, t_cts)
  err = lambda j, t: float(np.max(np.abs(np.asarray(j) - t.detach().numpy()))
                           / max(np.max(np.abs(t.detach().numpy())), 1e-30))
  errs = {k: err(j, t) for k, j, t in zip(("y", "state", "dx", "ddt", "dA", "dB", "dC"),
                                          (jy, js, *jg), (ty, ts, *tg))}

  rows = []
  for mode, j_call, t_call in (("fwd", lambda: j_fwd(*j_args), lambda: t_fwd(t_args)),
                               ("fwd+bwd", lambda: j_fb(j_args, j_cts),
                                lambda: t_fb(t_args, t_cts))):
    _time(j_call, j_sync), _time(t_call, t_sync)       # warm-up
    j_ms = t_ms = float("inf")
    for _ in range(repeats):                           # interleaved
      j_ms = min(j_ms, _time(j_call, j_sync) * 1e3)
      t_ms = min(t_ms, _time(t_call, t_sync) * 1e3)
    rows.append({"mode": mode,
                 "shape": f"B={Bsz} T={T} H={H} P={P} N={N} G={G} chunk={chunk} f32",
                 "jax_xla_ms": round(j_ms, 1), "torch_minimal_ms": round(t_ms, 1),
                 "ratio": round(t_ms / j_ms, 2)})
  rows.append({"max_rel_diff_jax_vs_torch": {k: f"{v:.1e}" for k, v in errs.items()}})
  return rows


if __name__ == "__main__":
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for k, v in {"B": 1, "T": 4096, "H": 8, "P": 64, "N": 64, "G": 1, "chunk": 64,
               "repeats": 5, "threads": THREADS}.items():
    p.add_argument(f"--{k}", type=int, default=v)
  a = p.parse_args()
  print(f"jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} cpus, {THREADS} "
        f"thread(s) each ({'CPU' if THREADS == 1 else 'wall'} time), XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}")
  for r in run(a.B, a.T, a.H, a.P, a.N, a.G, a.chunk, a.repeats):
    print(r, flush=True)
