"""One `impl=` switch shared by every kernel.

impl      what runs
--------  ----------------------------------------------------------------------
"auto"    per platform inside ONE jitted program (`lax.platform_dependent`):
          Pallas TPU kernel on TPU, Pallas Triton kernel on CUDA GPUs, on CPU
          the kernel's C++ FFI kernel where it has one (attention), it covers
          the call and it was loaded at start-up (training/platform_cpu.py),
          else the chunked/blockwise jnp path (XLA).
"xla"     the chunked/blockwise jnp path on every platform.
"pallas"  the Pallas kernel of the platform the program is lowered for; on a
          platform with no Pallas kernel (CPU) this is an error, not a fallback
          (lowering fails: "MLIR translation rule for primitive 'platform_index'
          not found for platform cpu").
"interpret"  the Pallas TPU kernel body run by the Pallas interpreter: how the
          kernels are proven on CPU (tests use the GPU body in interpret mode too).
"""
from __future__ import annotations

from typing import Callable

import jax

from kernels import IMPLS


def check_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
  return impl


def select(impl: str, *, xla: Callable, tpu: Callable, gpu: Callable,
           cpu: Callable | None = None) -> Callable:
  """Returns the function to call for `impl`.

  `xla(*args)` is the jnp path; `tpu(*args, interpret=bool)` and
  `gpu(*args, interpret=bool)` are the custom_vjp-wrapped Pallas kernels;
  `cpu(*args)`, if given, is a native CPU kernel that "auto" prefers on CPU.
  All take the same positional array arguments (static options are
  bound by the caller with functools.partial).
  """
  check_impl(impl)
  if impl == "xla":
    return xla
  if impl == "interpret":
    return lambda *a: tpu(*a, interpret=True)
  if impl == "pallas":
    # No `default` branch: platform_dependent traces EVERY branch, so a default
    # that raises would break tracing for TPU and CUDA too. Without one, only
    # lowering for another platform fails.
    def pallas(*a):
      return jax.lax.platform_dependent(
          *a, tpu=lambda *b: tpu(*b, interpret=False),
          cuda=lambda *b: gpu(*b, interpret=False))
    return pallas
  # auto
  return lambda *a: jax.lax.platform_dependent(
      *a, tpu=lambda *b: tpu(*b, interpret=False),
      cuda=lambda *b: gpu(*b, interpret=False), cpu=cpu or xla, default=xla)

