"""Parameter counts, device peaks, MFU; the metrics writer (metrics.jsonl + TensorBoard).

MFU = achieved model FLOP/s (modelzoo.flops_per_token: 6N + attention, each family's model.py) /
(devices x peak FLOP/s of one device). Peaks: the chips' dense bf16 figures from a table
(training/hardware.py); on CPU a measured f32 matmul peak (training/platform_cpu.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from training import hardware, platform_cpu

# Dense bf16 peak FLOP/s per device, matched against jax's `device_kind` (first substring hit);
# the figures and their sources are training/hardware.py's chip table.
PEAK_FLOPS = tuple((kind, chip.peak_flops) for chip in hardware.CHIPS for kind in chip.kinds)


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def device_peak_flops(device=None) -> tuple[float, str]:
  device = device or jax.devices()[0]
  kind = device.device_kind
  for key, peak in PEAK_FLOPS:
    if key in kind:
      return peak, f"{kind} (table, bf16 dense)"
  if device.platform == "cpu":
    return platform_cpu.measured_peak()
  return float("nan"), f"{kind} (unknown peak: MFU not reported)"


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
