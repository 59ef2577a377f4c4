"""Parameter counts, FLOPs per token, device peaks and MFU; the metrics writer (jsonl + TensorBoard).

FLOP convention (nanoGPT / PaLM appendix B): a training token costs 6·N (forward 2N, backward 4N, N = the
non-embedding-lookup parameters that take part in matmuls) plus attention 12·L·H·d_head·T, counting the
full T×T score and value matmuls, i.e. causal attention is NOT halved. MFU = achieved model FLOP/s /
(devices × peak FLOP/s of one device).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from training import hardware

# Dense bf16 peak FLOP/s per device, matched against jax's `device_kind` (first substring hit);
# the figures and their sources are training/hardware.py's chip table.
PEAK_FLOPS = tuple((kind, chip.peak_flops) for chip in hardware.CHIPS for kind in chip.kinds)


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def decoder_flops_per_token(mcfg, n_params: int, seq_len: int) -> float:
  """6N + 12·L·H·d_head·T with N excluding the position table (a lookup, not a matmul)."""
  n = n_params - (mcfg.max_len * mcfg.d_model if mcfg.pos == "learned" else 0)
  if not mcfg.tie_embeddings:
    n -= mcfg.vocab_size * mcfg.d_model     # the untied input table is a lookup too
  return 6.0 * n + decoder_kernel_flops_per_token(mcfg, seq_len)


def decoder_kernel_flops_per_token(mcfg, seq_len: int) -> float:
  """The attention kernel's part of it: 12·L·H·d_head·T (scores and values, fwd + bwd)."""
  d_head = mcfg.d_head or mcfg.d_model // mcfg.n_heads
  return 12.0 * mcfg.n_layers * mcfg.n_heads * d_head * seq_len


def device_peak_flops(device=None) -> tuple[float, str]:
  device = device or jax.devices()[0]
  kind = device.device_kind
  for key, peak in PEAK_FLOPS:
    if key in kind:
      return peak, f"{kind} (table, bf16 dense)"
  if device.platform == "cpu":      # the host's cores are shared by its CPU devices
    n = jax.local_device_count()
    return cpu_matmul_peak() / n, f"cpu (measured f32 matmul peak of the host / {n} devices)"
  return float("nan"), f"{kind} (unknown peak: MFU not reported)"


def cpu_matmul_peak(n: int = 1024, reps: int = 10) -> float:
  """FLOP/s of a jitted f32 n×n matmul on this machine, measured once and cached."""
  cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seqzoo" / "cpu_peak.json"
  key = f"{os.cpu_count()}cpu-n{n}"
  try:
    return json.loads(cache.read_text())[key]
  except (OSError, ValueError, KeyError):
    pass
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  peak = 2 * n**3 / best
  try:
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({key: peak}))
  except OSError:
    pass
  return peak


class Writer:
  """metrics.jsonl (one JSON object per logged step) and TensorBoard events; process 0 only."""

  def __init__(self, workdir: Path, active: bool = True):
    self.active = active
    if active:
      from tensorboardX import SummaryWriter
      self.f = open(workdir / "metrics.jsonl", "a")
      self.tb = SummaryWriter(str(workdir / "tb"))

  def write(self, step: int, metrics: dict):
    if not self.active:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self.f.write(json.dumps(row) + "\n")
    self.f.flush()
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), int(step))

  def close(self):
    if self.active:
      self.f.close()
      self.tb.close()
