"""seqzoo kernels: one public function per kernel, each with `impl="auto"|"xla"|"pallas"|"interpret"`.

  attention(q_BTHD, k_BSKD, v_BSKD, ...)           softmax flash attention      kernels/attention
  sigmoid_attention(q_BTHD, k_BSKD, v_BSKD, ...)   FlashSigmoid                 kernels/sigmoid_attention
  delta_rule(q, k, v, beta, g=None, ...)           chunked (gated) delta rule   kernels/delta_rule
  ssd(x, dt, A, B, C, ...)                         Mamba-2 SSD chunked scan     kernels/ssd
  selective_scan(u, delta, A, B, C, ...)           Mamba-1 selective scan       kernels/selective_scan

Imports are lazy so that using one kernel does not import (or break on) the others.
"""
import importlib

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


__all__ = list(_WHERE) + ["IMPLS"]
