"""Chip generations as data (peak FLOP/s, HBM, bandwidth) and their devices from a topology name.

    chip, devices = hardware.topology_devices("v5p:4x4x4")     # 64 TPU v5p devices, from any host
    chip, devices = hardware.topology_devices("h100:1x1x8")    # 8 H100s (partitions x hosts x GPUs)

The devices come from `jax.experimental.topologies` with no accelerator attached: TPU names go
to libtpu (`pip install -e '.[tpu]'`), GPU names to the CUDA plugin with XLA's description of the
GPU in training/targets/ (`pip install -e '.[gpu-aot]'`). Programs compiled for them are real TPU/GPU
executables (never run here), which is what `train.py --aot` reports on (training/aot.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from pathlib import Path

from configs.base import ConfigError

TARGETS = Path(__file__).parent / "targets"


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str                 # as in a topology name: v5e, h100, ...
  kinds: tuple[str, ...]    # substrings of jax's `device_kind` that mean this chip
  peak_flops: float         # dense bf16 FLOP/s per chip
  hbm_bytes: float          # per chip
  hbm_bw: float             # HBM bytes/s per chip
  platform: str             # "tpu" | "cuda"
  target: str = ""          # GPUs: XLA's GpuTargetConfigProto in training/targets/ ("" = none)


# Public spec sheets: cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} (per chip: bf16 TFLOP/s, HBM GiB,
# HBM GB/s); NVIDIA A100 80GB SXM and H100 SXM5 / H200 datasheets (bf16 dense, i.e. without 2:4
# sparsity). GPU HBM bytes are what the device reports (XLA's target specs' device_memory_size), not
# the datasheet's round "80 GB". Ordered so that the first `kinds` substring hit is right ("TPU v5
# lite" is v5e, a bare "TPU v5" is v5p).
CHIPS = (
    Chip("v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32 * 2**30, 1640e9, "tpu"),
    Chip("v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * 2**30, 819e9, "tpu"),
    Chip("v5p", ("TPU v5p", "TPU v5"), 459e12, 95 * 2**30, 2765e9, "tpu"),
    Chip("v4", ("TPU v4",), 275e12, 32 * 2**30, 1228e9, "tpu"),
    Chip("h200", ("H200",), 989e12, 141e9, 4.8e12, "cuda"),              # no target spec: no --aot
    Chip("h100", ("H100",), 989e12, 84_942_979_072, 3.35e12, "cuda", "h100_sxm.txtpb"),
    Chip("a100", ("A100",), 312e12, 85_100_068_864, 2.039e12, "cuda", "a100_sxm_80.txtpb"),
)
BY_NAME = {c.name: c for c in CHIPS}
INSTALL = {"tpu": "pip install -e '.[tpu]'", "cuda": "pip install -e '.[gpu-aot]'"}
NEEDS = {"tpu": ("libtpu",), "cuda": ("jax_cuda12_plugin", "nvidia.cuda_nvcc")}


def missing(platform: str) -> list[str]:
  """The modules of NEEDS[platform] that are not installed. find_spec("nvidia.cuda_nvcc") imports
  the parent `nvidia` and raises when that is absent too: absent either way."""
  def installed(m):
    try:
      return importlib.util.find_spec(m) is not None
    except ModuleNotFoundError:
      return False
  return [m for m in NEEDS[platform] if not installed(m)]


def chip_for_kind(device_kind: str) -> Chip | None:
  return next((c for c in CHIPS if any(k in device_kind for k in c.kinds)), None)


def parse(topology: str) -> tuple[Chip, str]:
  """'v5p:4x4x4' -> (the v5p Chip, '4x4x4'); ConfigError naming the valid forms otherwise."""
  aot = [c.name for c in CHIPS if c.platform == "tpu" or c.target]
  name, _, shape = topology.partition(":")
  chip = BY_NAME.get(name.lower())
  if chip is None or chip.name not in aot or not re.fullmatch(r"\d+(x\d+)+", shape):
    raise ConfigError(f"--aot {topology!r} is not a topology: use <chip>:<shape> with chip one of "
                      f"{', '.join(aot)}, e.g. v5e:2x2, v5p:4x4x4, h100:1x1x8 (GPUs: "
                      "partitions x hosts x GPUs per host)")
  return chip, shape


def topology_devices(topology: str) -> tuple[Chip, list]:
  """The chip and the devices of a named slice, without any accelerator on this host."""
  chip, shape = parse(topology)
  absent = missing(chip.platform)
  if absent:
    raise ConfigError(f"--aot {topology} needs the {chip.platform.upper()} compiler ({absent[0]} "
                      f"is not installed): {INSTALL[chip.platform]}")
  from jax.experimental import topologies
  try:
    if chip.platform == "tpu":
      # Off a TPU VM libtpu finds no worker hostnames in the metadata and logs an INVALID_ARGUMENT
      # error; compiling needs no hosts, so name this one (unless the user set them).
      os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
      # libtpu locks /tmp/libtpu_lockfile for its process's life, so a second process (another
      # --aot, a test run, training on this TPU VM) would fail to load it; compiling touches no chip.
      os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
      desc = topologies.get_topology_desc(platform="tpu", topology_name=f"{chip.name}:{shape}")
    else:
      desc = topologies.get_topology_desc(platform="cuda", topology=shape,
                                          target_config=(TARGETS / chip.target).read_text())
  except Exception as e:    # the compiler's own words: layouts it rejects, shapes it cannot tile
    raise ConfigError(f"--aot {topology}: {str(e).splitlines()[0]}") from None
  return chip, list(desc.devices)


def compiler_options(chip: Chip) -> dict:
  """XLA options a compile for `chip` needs on a host without it: XLA:GPU cannot load CUDA here
  to probe for CUB sort kernels (jnp.sort fails), so it uses its own sort instead."""
  if chip.platform != "cuda":
    return {}
  return {"xla_gpu_deviceless_cub_mode": "DEVICELESS_CUB_DISABLED"}
