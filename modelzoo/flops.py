"""Model FLOPs per training token: the decoder's count, the default for models without their own.

Convention (nanoGPT / PaLM appendix B): a training token costs 6·N (forward 2N, backward 4N, N =
the non-embedding-lookup parameters that take part in matmuls) plus attention 12·L·H·d_head·T,
counting the full T×T score and value matmuls, i.e. causal attention is NOT halved. Other models
define `flops_per_token` / `kernel_flops_per_token` in their own module (modelzoo/__init__.py).
"""
from __future__ import annotations


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
