"""seqzoo kernels: one public function per kernel, each with `impl="auto"|"xla"|"pallas"|"interpret"`.

  attention(q_BTHD, k_BSKD, v_BSKD, ...)           softmax flash attention      kernels/attention
  sigmoid_attention(q_BTHD, k_BSKD, v_BSKD, ...)   FlashSigmoid                 kernels/sigmoid_attention
  delta_rule(q, k, v, beta, g=None, ...)           chunked (gated) delta rule   kernels/delta_rule
  ssd(x, dt, A, B, C, ...)                         Mamba-2 SSD chunked scan     kernels/ssd
  selective_scan(u, delta, A, B, C, ...)           Mamba-1 selective scan       kernels/selective_scan

Imports are lazy so that using one kernel does not import (or break on) the others.
"""
import importlib
import sys
import types

_WHERE = {
    "attention": "kernels.attention.api",
    "sigmoid_attention": "kernels.sigmoid_attention.api",
    "delta_rule": "kernels.delta_rule.api",
    "ssd": "kernels.ssd.api",
    "selective_scan": "kernels.selective_scan.api",
}
IMPLS = ("auto", "xla", "pallas", "interpret")


def __getattr__(name):
  if name in _WHERE:
    return getattr(importlib.import_module(_WHERE[name]), name)
  raise AttributeError(f"module 'kernels' has no attribute {name!r}")


class _KernelsModule(types.ModuleType):
  """Importing kernels/<name>/ makes Python bind the subpackage as the attribute `kernels.<name>`,
  which would shadow the function above; refuse that binding so `kernels.<name>` is always the
  function (the subpackages stay importable: `from kernels.attention import reference`)."""

  def __setattr__(self, name, value):
    if name in _WHERE and isinstance(value, types.ModuleType):
      return
    super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KernelsModule


__all__ = list(_WHERE) + ["IMPLS"]
