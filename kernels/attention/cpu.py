"""The CPU attention kernel (cpu.cc): built on first use, called through XLA's FFI.

`impl="auto"` runs it on CPU for what it covers (`covers`): float32 softmax attention, causal or
not, GQA, head_dim 8/16/32/64/128, no segment ids / window / softcap, static shapes, and arrays
that are each device's own: off-mesh, on a one-device mesh, or inside a shard_map over every mesh
axis of size > 1, as the models call it (layers/sharding.py). Under automatic partitioning XLA
would replicate the custom call's operands; such calls keep the jnp path.
Everything else, and hosts without a C++ compiler, take the jnp path (`reference.blockwise`).

The shared library is compiled once per (source, command, jax version, what -march=native means to
the compiler here) with `$CXX` (default g++) into `$SEQZOO_CACHE` (default ~/.cache/seqzoo), so a
cache shared between different CPUs keeps one file per CPU. `load()` builds and registers it; the
CPU platform's start-up calls it (training/platform_cpu.py), never tracing: a process that did not
load it gets the jnp path. A failed build warns once and falls back.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from kernels._attn_common import Spec

SOURCE = pathlib.Path(__file__).with_name("cpu.cc")
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fPIC", "-shared", "-std=c++17")
LIBS = ("-lmvec",)   # glibc's vector math: the vectorised expf
HEAD_DIMS = (8, 16, 32, 64, 128)
FWD, BWD = "seqzoo_attention_fwd", "seqzoo_attention_bwd"


def _run(cmd: list[str], **kw) -> str:
  r = subprocess.run(cmd, capture_output=True, text=True, **kw)
  if r.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
  return r.stdout


def build(cxx: str, cache: pathlib.Path) -> pathlib.Path:
  """Compiles cpu.cc (if not cached) and returns the shared library's path; raises on failure."""
  if shutil.which(cxx) is None:
    raise RuntimeError(f"no C++ compiler {cxx!r} on PATH (set CXX)")
  # The compiler's predefined macros under -march=native (__AVX2__, __AVX512F__, ...): the target.
  target = _run([cxx, "-march=native", "-dM", "-E", "-x", "c++", "-"], input="")
  key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join((cxx,) + FLAGS + LIBS),
                                  jax.__version__, target]).encode())
  so = cache / f"attention_cpu-{key.hexdigest()[:16]}.so"
  if so.exists():
    return so
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as tmp:   # build aside, then rename: atomic
    out = pathlib.Path(tmp) / so.name
    _run([cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out), *LIBS])
    os.replace(out, so)
  return so


@functools.cache
def load() -> bool:
  """Builds and registers the kernel once per process; False (with a warning) if that fails."""
  cache = pathlib.Path(os.environ.get("SEQZOO_CACHE", pathlib.Path.home() / ".cache" / "seqzoo"))
  try:
    lib = ctypes.cdll.LoadLibrary(str(build(os.environ.get("CXX", "g++"), cache)))
  except (OSError, RuntimeError) as e:
    warnings.warn(f"CPU attention kernel unavailable, using the jnp path: {e}")
    return False
  for name in (FWD, BWD):
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  return True


def loaded() -> bool:
  """Whether `load()` succeeded in this process (never builds: safe at trace time)."""
  return load.cache_info().currsize > 0 and load()


def covers(spec: Spec, q, k, v, q_seg) -> bool:
  """Whether the kernel computes this call (checked at trace time; see the module doc)."""
  shapes = (*q.shape, *k.shape)
  mesh = jax.sharding.get_abstract_mesh()
  local = mesh.empty or all(n == 1 or a in mesh.manual_axes for a, n in mesh.shape.items())
  return (spec.kind == "softmax" and spec.window is None and spec.softcap is None
          and q_seg is None and all(isinstance(n, int) for n in shapes)
          and all(x.dtype == jnp.float32 for x in (q, k, v)) and q.shape[-1] in HEAD_DIMS
          and local and jax.default_backend() == "cpu" and loaded())


def _call(name, outs, *args, spec: Spec):
  if not loaded():
    raise RuntimeError("the CPU attention kernel is not loaded (kernels.attention.cpu.load())")
  return jax.ffi.ffi_call(name, outs, vmap_method="sequential")(
      *args, scale=np.float32(spec.scale), causal=spec.causal)


def _fwd(spec, q, k, v):
  B, T, H, _ = q.shape
  o, lse = _call(FWD, (jax.ShapeDtypeStruct(q.shape, q.dtype),
                       jax.ShapeDtypeStruct((B, H, T), jnp.float32)), q, k, v, spec=spec)
  return o, (q, k, v, o, lse)


def _bwd(spec, res, do):
  q, k, v, _, _ = res
  outs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v))
  return _call(BWD, outs, *res, do, spec=spec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def attention(spec: Spec, q_BTHD, k_BSKD, v_BSKD):
  """o [B,T,H,D] = softmax(scale * q k^T, masked) v, for calls that `covers` accepts."""
  return _fwd(spec, q_BTHD, k_BSKD, v_BSKD)[0]


attention.defvjp(_fwd, _bwd)
