"""Everything that tunes a run for the CPU platform, and nothing else does: fenced off here.

    unapplied = configure(cfg.mesh.cpu_devices)   # before any JAX backend starts
    notes = start()                               # after: builds the C++ attention kernel
    peak, how = measured_peak()                   # FLOP/s per CPU device, for MFU

Each function first asks whether this process runs on CPU and does nothing where it does not: a
TPU or GPU host never gets these flags, the allocator setting or the kernel build.

- XLA:CPU flags (CPU_XLA_FLAGS) and `mesh.cpu_devices` JAX devices on the CPU platform.
- glibc's allocator told to keep freed memory (keep_freed_memory): process-wide, so only on CPU.
- The C++ attention kernel (kernels/attention/cpu.cc) is the CPU default of `impl="auto"`: it made
  the shakespeare_char step ~1.1x faster (docs/shakespeare_char.md). `start()` compiles it once
  (`g++`, cached in ~/.cache/seqzoo) and registers it before anything is traced; tracing never
  builds it, and a process that never calls `start()` (export.py, --aot, library use) or runs
  with model.attn_impl=xla takes the jnp path (docs/kernels_attention.md).
- The peak for MFU: measured, not from a table (measured_peak).
"""
from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import time
from pathlib import Path

import jax

from configs.base import ConfigError

# XLA:CPU settings (the same on every machine, so a CPU run's numbers are reproducible). YNNPACK
# runs the dots it supports, each on its own: with its elementwise fusions the shakespeare_char step
# ran ~1.2x slower on our 2-core machines, and dot fusions that pull in the neighbouring softmax and
# residual ops ~1.05-1.1x slower than single dots (docs/shakespeare_char.md).
CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def runs_on_cpu() -> bool:
  """Whether JAX will pick the CPU platform, decided before any backend starts (starting one to
  ask would be too late for the settings below): the platforms named in JAX_PLATFORMS /
  jax_platforms if any, else not CPU when libtpu found TPU chips at `import jax` or a GPU device
  node exists, else CPU (an accelerator plugin installed on a CPU-only host, e.g. for --aot,
  still counts as CPU)."""
  from jax._src import cloud_tpu_init, xla_bridge
  if xla_bridge.backends_are_initialized():
    return jax.default_backend() == "cpu"
  platforms = jax.config.jax_platforms
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  if cloud_tpu_init.running_in_cloud_tpu_vm:
    return False
  return not any(glob.glob(p) for p in ("/dev/nvidia[0-9]*", "/dev/kfd"))


def configure(cpu_devices: int) -> list[str]:
  """Before any backend starts, on CPU: XLA:CPU flags, `cpu_devices` JAX devices, glibc kept from
  returning freed memory. Settings already in XLA_FLAGS win. Returns what could not be applied
  (JAX had started: tests, notebooks); does nothing off CPU.

  Several CPU devices make data parallelism over the cores: XLA:CPU splits the small ops of a
  small model poorly over threads, while one device per core keeps every core busy.
  """
  from jax._src import xla_bridge
  if cpu_devices < 1:
    raise ConfigError(f"mesh.cpu_devices={cpu_devices} must be > 0")
  if not runs_on_cpu():
    return []
  flags = os.environ.get("XLA_FLAGS", "")
  add = [f"--{k}={v}" for k, v in CPU_XLA_FLAGS.items() if f"--{k}=" not in flags]
  devices = cpu_devices > 1 and "xla_force_host_platform_device_count" not in flags
  keep_freed_memory()
  if xla_bridge.backends_are_initialized():
    return add + ([f"mesh.cpu_devices={cpu_devices}"] if devices else [])
  if add:
    os.environ["XLA_FLAGS"] = " ".join([flags, *add]).strip()
  if devices:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  return []


def keep_freed_memory() -> bool:
  """Stop glibc from handing XLA:CPU's large per-step buffers back to the OS when freed.

  By default blocks over 32 MiB are mmap'd and unmapped on free, the heap top is trimmed, and
  worker threads get their own arenas (64 MiB heaps that also unmap), so every step faults its
  buffers in again: 12k-47k page faults per step, a quarter of the quickstart run's time in the
  kernel (docs/shakespeare_char.md). One arena that keeps its pages; peak memory is unchanged.
  Process-wide: `configure` calls it only on CPU, before JAX starts its threads. Returns False
  where libc is not glibc.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
  ok = [libc.mallopt(M_MMAP_THRESHOLD, 1 << 30),        # 1 GiB; each returns 1 on success
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1),
        libc.mallopt(M_ARENA_MAX, 1)]
  return all(ok)


def start(model_cfg=None) -> list[str]:
  """After the backend started, before anything is traced: on CPU, builds and registers the C++
  attention kernel (once per process; a failed build warns and `impl="auto"` keeps the jnp path).
  Returns notes to log about `model_cfg` on this CPU."""
  if jax.default_backend() != "cpu":
    return []
  from kernels.attention import cpu as attention_cpu
  attention_cpu.load()
  notes = []
  if (model_cfg is not None and model_cfg.name == "decoder"
      and model_cfg.matmul_dtype != "bfloat16" and has_amx_bf16()):
    notes.append("note: this CPU has AMX-BF16: model.matmul_dtype=bfloat16 (and "
                 "mesh.cpu_devices=<cores>) ran the decoder 1.2-1.6x faster on such CPUs "
                 "(docs/shakespeare_char.md)")
  return notes


# ------------------------------------------------------------------------------------------------
# The host's peak FLOP/s, for MFU (the chips' peaks are a table: training/hardware.py).

PEAK_ROUNDS, PEAK_REPS, PEAK_N = 5, 10, 1024
PEAK_FILE = "cpu_peak.json"


def measured_peak() -> tuple[float, str]:
  """(FLOP/s per JAX device, how): the host's measured peak (host_peak) shared by its devices."""
  n = jax.local_device_count()
  return host_peak() / n, (f"cpu: measured peak, the best f32 matmul timed on this host, / {n} "
                           f"device{'s' * (n > 1)}")


@functools.cache
def host_peak() -> float:
  """FLOP/s of a jitted float32 PEAK_N² matmul on this host: the fastest run ever measured here.
  Cached per machine (CPU model, cores, JAX version, devices). With no entry, PEAK_ROUNDS x
  PEAK_REPS runs spread over a second; then each process times one more round (~0.1 s) and keeps
  the best, so a first measurement taken while the host was busy (too low a peak: MFU over
  100%) is corrected by the next run on a quieter host. An f32 matmul peak, not a datasheet
  figure: MFU against it says how close the step comes to what XLA:CPU's best kernel does here."""
  cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seqzoo" / PEAK_FILE
  key = (f"{cpu_info().get('model name', '?')}|{os.cpu_count()} cpus|jax {jax.__version__}|"
         f"{jax.local_device_count()} devices|n{PEAK_N}")
  try:
    table = json.loads(cache.read_text())
    table = table if isinstance(table, dict) else {}
  except (OSError, ValueError):
    table = {}
  entry = table.get(key) if isinstance(table.get(key), dict) else {}
  known = float(entry.get("flops", 0.0))
  flops = _matmul_flops(PEAK_ROUNDS if known <= 0 else 1)
  if flops > known:
    table[key] = {"flops": flops}
    try:
      cache.parent.mkdir(parents=True, exist_ok=True)
      tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
      tmp.write_text(json.dumps(table, indent=1))
      tmp.replace(cache)
    except OSError:
      pass
  return max(flops, known)


def _matmul_flops(rounds: int) -> float:
  import jax.numpy as jnp
  a = jnp.ones((PEAK_N, PEAK_N), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for r in range(rounds):
    for _ in range(PEAK_REPS):
      t = time.perf_counter()
      f(a).block_until_ready()
      best = min(best, time.perf_counter() - t)
    if r + 1 < rounds:
      time.sleep(0.2)               # spread the rounds out: other work on the host comes and goes
  return 2 * PEAK_N**3 / best


# ------------------------------------------------------------------------------------------------
# The host CPU.

def cpu_info(cpuinfo: str | None = None) -> dict[str, str]:
  """The first CPU's "key: value" lines of Linux's /proc/cpuinfo (empty elsewhere)."""
  if cpuinfo is None:
    f = Path("/proc/cpuinfo")
    cpuinfo = f.read_text() if f.exists() else ""
  fields = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(":")
    if sep:
      fields.setdefault(key.strip(), value.strip())
  return fields


def has_amx_bf16(cpuinfo: str | None = None) -> bool:
  """True if the CPU flags list AMX-BF16 (Intel Sapphire Rapids and later)."""
  return "amx_bf16" in cpu_info(cpuinfo).get("flags", "").split()
