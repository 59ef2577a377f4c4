"""sigmoid_attention(q, k, v, ...): FlashSigmoid, o_i = sum_j m_ij sigmoid(scale q_i.k_j + b) v_j.

No row normalisation, so no running max / LSE: the backward only needs dS = P (1 - P) dP. It is
the "sigmoid" kind of the attention machinery (kernels/attention: the same oracle, blockwise path,
Pallas kernel bodies and dispatch), not a fork of it.
"""
from __future__ import annotations

import math

from kernels import _dispatch
from kernels._attn_common import Spec, check_inputs, is_static_number
from kernels.attention.api import run


def sigmoid_attention(q_BTHD, k_BSKD, v_BSKD, *, bias=None, causal=True, segment_ids=None,
                      window=None, scale=None, impl="auto", block_q=None, block_k=None):
  """q [B,T,H,D], k/v [B,S,K,D] with K | H; returns o [B,T,H,D] in q's dtype.

  bias: static scalar b, default -log(S) (S = key length), as in Ramapuram et al. 2024.
  Masks and GQA as in kernels.attention.
  """
  _dispatch.check_impl(impl)
  q_seg, kv_seg, scale = check_inputs("sigmoid_attention", q_BTHD, k_BSKD, v_BSKD, causal=causal,
                                      segment_ids=segment_ids, window=window, scale=scale)
  S = k_BSKD.shape[1]
  if bias is None:
    bias = -math.log(S)
  if not is_static_number(bias) or not math.isfinite(bias):
    raise ValueError(f"sigmoid_attention: bias must be a finite Python number (static), "
                     f"got {bias!r}")
  spec = Spec("sigmoid", causal, window, scale, None, float(bias), q_BTHD.shape[1], S)
  return run(spec, q_BTHD, k_BSKD, v_BSKD, q_seg, kv_seg, impl=impl, block_q=block_q,
             block_k=block_k)
