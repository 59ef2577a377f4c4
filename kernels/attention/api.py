"""attention(q, k, v, ...): softmax attention with causal / window / segment masks, GQA, softcap.

impl="auto" on CPU: the C++ kernel (cpu.cc via XLA's FFI) for the calls it covers (float32, causal
or not, no segment ids / window / softcap, one device: cpu.covers) once it is loaded (cpu.load(),
at start-up by training/platform_cpu.py; tracing never builds it), else the jnp path below.
impl="xla" (and "auto" on CPU otherwise): the blockwise FlashAttention-2 jnp path
(reference.blockwise): linear memory, and on this CPU faster than the materialised attention for
fwd+bwd at every length measured (T = 64..4096; forward-only is within ~0.7-1.1x at T <= 512), so
there is no short-T switch (benchmarks/bench_attention.py, docs/kernels_attention.md).
impl="pallas" / "auto" on TPU and CUDA: the Pallas kernels (pallas_tpu.py / pallas_gpu.py) inside a
custom_vjp whose backward is their FA2 backward kernels; "interpret" runs the TPU kernels on CPU.
"""
from __future__ import annotations

import functools

import jax

from kernels import _dispatch
from kernels._attn_common import Spec, check_inputs, is_static_number, maybe_traced_scalar
from kernels.attention import cpu, pallas_gpu, pallas_tpu, reference

# Blockwise tile edge for impl="xla". Its tiles span all batch*heads at once, so smaller than the
# kernels' tiles; 1024 was clearly slower on this CPU, 128-512 within noise (docs).
XLA_BLOCK = 256


def attention(q_BTHD, k_BSKD, v_BSKD, *, causal=True, segment_ids=None, window=None,
              logit_scale=1.0, softcap=None, scale=None, impl="auto", block_q=None, block_k=None):
  """Softmax attention. q [B,T,H,D], k/v [B,S,K,D] with K | H; returns o [B,T,H,D] in q's dtype.

  logits = logit_scale * scale * q.k (scale defaults to D**-0.5; logit_scale may be traced),
  optionally soft-capped c*tanh(logits/c). Masks: see kernels/_attn_common.py. Rows that see no
  key return 0.
  """
  _dispatch.check_impl(impl)
  q_seg, kv_seg, scale = check_inputs("attention", q_BTHD, k_BSKD, v_BSKD, causal=causal,
                                      segment_ids=segment_ids, window=window, scale=scale)
  if softcap is not None and (not is_static_number(softcap) or softcap <= 0):
    raise ValueError(f"attention: softcap must be a positive Python number, got {softcap!r}")
  logit_scale = maybe_traced_scalar("attention", "logit_scale", logit_scale)
  if is_static_number(logit_scale):
    scale *= logit_scale
  else:   # traced multiplier: fold into q, so autodiff gives its gradient outside the kernels
    q_BTHD = (q_BTHD * logit_scale).astype(q_BTHD.dtype)
  spec = Spec("softmax", causal, window, scale, None if softcap is None else float(softcap), 0.0,
              q_BTHD.shape[1], k_BSKD.shape[1])
  return run(spec, q_BTHD, k_BSKD, v_BSKD, q_seg, kv_seg, impl=impl, block_q=block_q,
             block_k=block_k)


def run(spec, q, k, v, q_seg, kv_seg, *, impl, block_q, block_k):
  """Dispatch shared with sigmoid_attention (the spec says which kind)."""
  xla = functools.partial(_xla, spec, block_q=block_q, block_k=block_k)
  blocks = (block_q, block_k)
  tpu = lambda *a, interpret: pallas(pallas_tpu, spec, blocks, interpret, *a)
  gpu = lambda *a, interpret: pallas(pallas_gpu, spec, blocks, interpret, *a)
  native = None
  if impl == "auto" and cpu.covers(spec, q, k, v, q_seg):
    native = lambda q, k, v, q_seg, kv_seg: cpu.attention(spec, q, k, v)
  return _dispatch.select(impl, xla=xla, tpu=tpu, gpu=gpu, cpu=native)(q, k, v, q_seg, kv_seg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def pallas(backend, spec, blocks, interpret, q, k, v, q_seg, kv_seg):
  """The Pallas kernels of `backend` (pallas_tpu | pallas_gpu) with their FA2 backward."""
  return _pallas_fwd(backend, spec, blocks, interpret, q, k, v, q_seg, kv_seg)[0]


def _pallas_fwd(backend, spec, blocks, interpret, q, k, v, q_seg, kv_seg):
  o, lse = backend.fwd(spec, q, k, v, q_seg, kv_seg, block_q=blocks[0], block_k=blocks[1],
                       interpret=interpret)
  # Sigmoid's backward needs neither o nor lse: keep only the inputs.
  return o, (q, k, v, q_seg, kv_seg, o if spec.kind == "softmax" else None, lse)


def _pallas_bwd(backend, spec, blocks, interpret, res, do):
  dq, dk, dv = backend.bwd(spec, *res, do, block_q=blocks[0], block_k=blocks[1],
                           interpret=interpret)
  return dq, dk, dv, None, None


pallas.defvjp(_pallas_fwd, _pallas_bwd)


def _xla(spec, q, k, v, q_seg, kv_seg, *, block_q, block_k):
  return reference.blockwise(q, k, v, spec, q_seg, kv_seg, block_q=block_q or XLA_BLOCK,
                             block_k=block_k or XLA_BLOCK)
