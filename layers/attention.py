"""Multi-head attention with GQA/MQA, RoPE, packed sequences and a KV cache for decoding.

Training and prefill-free evaluation call `kernels.attention` / `kernels.sigmoid_attention` (flash
kernels on TPU/GPU, a blockwise XLA path on CPU). Decoding (`decode=True`) appends the new keys and
values to a fixed-size cache and attends with plain jnp: one query row per step needs no kernel.
`attend` (the kernels on a mesh) and `cached_attention` (the KV cache) serve any attention module
(the Dual-Stream model's too).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

import kernels
from layers.block import TokenMixer
from layers.embed import rope
from layers.dense import Dense
from layers.norm import Norm
from layers import sharding
from layers.sharding import constrain

BTHD = ("batch", "length", "act_heads", None)   # the kernels' q, k, v, o on a mesh


class Attention(TokenMixer, kw_only=True):
  n_heads: int
  n_kv_heads: int
  d_head: int
  kind: str = "softmax"          # softmax | sigmoid
  sigmoid_bias: float = 0.0      # b in sigmoid(q.k/sqrt(d) + b), e.g. -log(n)
  rope_theta: float | None = None   # RoPE base on q and k; None: no RoPE (positions, if any, are
                                    # added at the input)
  use_bias: bool = True          # GPT-2 has biases
  qk_norm: str = "none"          # none | layernorm | rmsnorm: per-head norm of q and k before RoPE
  qk_norm_eps: float = 1e-5
  window: int | None = None      # sliding window: a query sees its last `window` keys (incl. own)
  matmul_dtype: jnp.dtype | None = None   # of the projections' and the kernel's dot operands

  def proj(self, x, heads, axis_names, name):
    return Dense((heads, self.d_head), ("embed",) + axis_names, use_bias=self.use_bias,
                 init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype,
                 matmul_dtype=self.matmul_dtype, name=name)(x)

  @nn.compact
  def __call__(self, x_BTD, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    H, K = self.n_heads, self.n_kv_heads
    q_BTHD = self.proj(x_BTD, H, ("heads", "kv"), "query")
    k_BTKD = self.proj(x_BTD, K, ("kv_heads", "kv"), "key")
    v_BTKD = self.proj(x_BTD, K, ("kv_heads", "kv"), "value")
    if self.qk_norm != "none":
      # QK-norm bounds the initial logits (sigmoid attention's recommended stabiliser); one scale
      # vector of size d_head shared by all heads, as in the reference implementations.
      q_BTHD = Norm(self.qk_norm, eps=self.qk_norm_eps, param_dtype=self.param_dtype,
                    name="query_norm")(q_BTHD)
      k_BTKD = Norm(self.qk_norm, eps=self.qk_norm_eps, param_dtype=self.param_dtype,
                    name="key_norm")(k_BTKD)
    if self.rope_theta is not None:
      q_BTHD = rope(q_BTHD, positions_BT, self.rope_theta)
      k_BTKD = rope(k_BTKD, positions_BT, self.rope_theta)
    q_BTHD = constrain(q_BTHD, ("batch", "length", "act_heads", None))
    if not self.decode:   # the kernels' dots take their inputs' dtype (float32 accumulation)
      mm = jnp.dtype(self.matmul_dtype or self.dtype)
      q_BTHD, k_BTKD, v_BTKD = (a.astype(mm) for a in (q_BTHD, k_BTKD, v_BTKD))
    kw = dict(kind=self.kind, sigmoid_bias=self.sigmoid_bias, window=self.window)
    if self.decode:
      o_BTHD = cached_attention(self, q_BTHD, k_BTKD, v_BTKD, positions_BT, logit_scale, **kw)
    else:
      o_BTHD = attend(q_BTHD, k_BTKD, v_BTKD, segment_ids_BT, logit_scale, impl=self.impl, **kw)
    o_BTHD = constrain(o_BTHD.astype(self.dtype), ("batch", "length", "act_heads", None))
    return Dense((x_BTD.shape[-1],), ("heads", "kv", "embed"), n_in=2, use_bias=self.use_bias,
                 init_std=self.out_std, dtype=self.dtype, param_dtype=self.param_dtype,
                 matmul_dtype=self.matmul_dtype, name="out")(o_BTHD)


def attend(q_BTHD, k_BTKD, v_BTKD, segment_ids_BT=None, logit_scale=1.0, *, kind="softmax",
           sigmoid_bias=0.0, window=None, impl="auto"):
  """Causal attention through the kernels, per shard of the active mesh (batch and heads split,
  time whole). K may divide H (GQA/MQA)."""
  def kernel(q, k, v, seg, scale):
    if kind == "sigmoid":
      return kernels.sigmoid_attention(q, k, v, bias=sigmoid_bias, causal=True, segment_ids=seg,
                                       window=window, impl=impl)
    return kernels.attention(q, k, v, causal=True, segment_ids=seg, window=window,
                             logit_scale=scale, impl=impl)
  # GQA: a head shard must hold the KV heads of its query groups.
  k_BTKD, v_BTKD = (sharding.repeat_groups(a, 2, q_BTHD.shape[2]) for a in (k_BTKD, v_BTKD))
  return sharding.shard_map_kernel(kernel, (BTHD, BTHD, BTHD, ("batch", "length"), ()), BTHD)(
      q_BTHD, k_BTKD, v_BTKD, segment_ids_BT, logit_scale)


def attend_explicit(q_BTHD, k_BSKD, v_BSKD, visible_BTS, logit_scale=1.0, *, kind="softmax",
                    sigmoid_bias=0.0):
  """Materialised attention in float32 over the keys `visible_BTS` allows; returns (o_BTHD,
  p_BHTS). One query row per decoding step needs no kernel; interpretability hooks keep p."""
  B, T, H, D = q_BTHD.shape
  S, K = k_BSKD.shape[1], k_BSKD.shape[2]
  q_BTKGD = q_BTHD.reshape(B, T, K, H // K, D).astype(jnp.float32)
  s_BKGTS = jnp.einsum("btkgd,bskd->bkgts", q_BTKGD, k_BSKD.astype(jnp.float32))
  s_BKGTS = s_BKGTS * (logit_scale / math.sqrt(D))
  visible = visible_BTS[:, None, None]
  if kind == "sigmoid":
    p_BKGTS = jnp.where(visible, jax.nn.sigmoid(s_BKGTS + sigmoid_bias), 0.0)
  else:
    p_BKGTS = jax.nn.softmax(jnp.where(visible, s_BKGTS, -jnp.inf), axis=-1)
  o_BTKGD = jnp.einsum("bkgts,bskd->btkgd", p_BKGTS, v_BSKD.astype(jnp.float32))
  return o_BTKGD.reshape(B, T, H, D).astype(q_BTHD.dtype), p_BKGTS.reshape(B, H, T, S)


def cached_attention(mod: nn.Module, q_BTHD, k_BTKD, v_BTKD, positions_BT, logit_scale=1.0, *,
                     kind="softmax", sigmoid_bias=0.0, window=None):
  """KV-cache decoding inside `mod`'s compact call: writes k, v at the cache index of its "cache"
  collection (cached_key, cached_value, cache_index) and attends to every filled slot at or before
  each query (within `window`). During init the given input only fixes the cache length."""
  ready = mod.has_variable("cache", "cached_key")
  ck = mod.variable("cache", "cached_key", jnp.zeros, k_BTKD.shape, k_BTKD.dtype)
  cv = mod.variable("cache", "cached_value", jnp.zeros, v_BTKD.shape, v_BTKD.dtype)
  idx = mod.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
  if not ready:
    return jnp.zeros_like(q_BTHD)
  ck.value = jax.lax.dynamic_update_slice(ck.value, k_BTKD, (0, idx.value, 0, 0))
  cv.value = jax.lax.dynamic_update_slice(cv.value, v_BTKD, (0, idx.value, 0, 0))
  idx.value = idx.value + q_BTHD.shape[1]
  key_S = jnp.arange(ck.value.shape[1])[None, None, :]
  visible_BTS = key_S <= positions_BT[:, :, None]
  if window is not None:
    visible_BTS &= key_S > positions_BT[:, :, None] - window
  return attend_explicit(q_BTHD, ck.value, cv.value, visible_BTS, logit_scale, kind=kind,
                         sigmoid_bias=sigmoid_bias)[0]
