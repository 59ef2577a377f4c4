"""Multi-head attention with GQA/MQA, RoPE, packed sequences and a KV cache for decoding.

Training and prefill-free evaluation call `kernels.attention` / `kernels.sigmoid_attention` (flash
kernels on TPU/GPU, a blockwise XLA path on CPU). Decoding (`decode=True`) appends the new keys and
values to a fixed-size cache and attends with plain jnp: one query row per step needs no kernel.
`attend` (the kernels on a mesh) and `cached_attention` (the KV cache) serve any attention module
(the Dual-Stream model's too).

Quantizable Transformers (Bondarenko et al. 2023): `clip=(zeta, gamma)` replaces the softmax by
clip((zeta - gamma) softmax + gamma, 0, 1), so a head can put exactly zero weight on keys. The
clip needs each row's normaliser before any value is accumulated, which a one-pass flash kernel
does not have: clipped attention runs materialised in jnp (T x T per head, fine at the sizes the
paper studies; the flash kernels serve every other call). `gate=True` multiplies head h's output
by sigmoid(x_h . w_h + b_h), x_h the h-th of H equal slices of the input x.
With the "stats" collection mutable, each layer sows the entropy of its attention rows per head
(`attn_entropy` [H], nats; layers/stats.py).
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
from layers import sharding, stats
from layers.sharding import constrain, param

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
  clip: tuple[float, float] | None = None  # clipped softmax (zeta, gamma); None = plain softmax
  gate: bool = False             # gated attention: sigmoid(G_h(x_h)) * head h's output
  sigma_reparam: bool = False    # σReparam on the projections (layers/sigma_reparam.py)

  def proj(self, x, heads, axis_names, name):
    return Dense((heads, self.d_head), ("embed",) + axis_names, use_bias=self.use_bias,
                 init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype,
                 matmul_dtype=self.matmul_dtype, sigma_reparam=self.sigma_reparam, name=name)(x)

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
    logged = stats.wanted(self)
    if self.decode:
      o_BTHD = cached_attention(self, q_BTHD, k_BTKD, v_BTKD, positions_BT, logit_scale,
                                clip=self.clip, **kw)
    elif self.clip is not None or logged:   # materialised: the clip, or p for the statistic
      visible_BTS = training_mask(q_BTHD.shape[1], segment_ids_BT, self.window)
      o_BTHD, p_BHTS = attend_explicit(q_BTHD, k_BTKD, v_BTKD, visible_BTS, logit_scale,
                                       kind=self.kind, sigmoid_bias=self.sigmoid_bias,
                                       clip=self.clip)
      if logged:
        stats.sow(self, "attn_entropy", stats.entropy(p_BHTS))
      if self.clip is None:   # the statistic alone changes nothing: the kernels' output
        o_BTHD = attend(q_BTHD, k_BTKD, v_BTKD, segment_ids_BT, logit_scale, impl=self.impl, **kw)
    else:
      o_BTHD = attend(q_BTHD, k_BTKD, v_BTKD, segment_ids_BT, logit_scale, impl=self.impl, **kw)
    if self.gate:
      o_BTHD = o_BTHD * self.head_gates(x_BTD)[..., None]
    o_BTHD = constrain(o_BTHD.astype(self.dtype), ("batch", "length", "act_heads", None))
    return Dense((x_BTD.shape[-1],), ("heads", "kv", "embed"), n_in=2, use_bias=self.use_bias,
                 init_std=self.out_std, dtype=self.dtype, param_dtype=self.param_dtype,
                 matmul_dtype=self.matmul_dtype, sigma_reparam=self.sigma_reparam,
                 name="out")(o_BTHD)


  def head_gates(self, x_BTD):
    """sigmoid(x_h . w_h + b_h) per head h, x_h the h-th slice of x: [B, T, H], float32."""
    B, T, D = x_BTD.shape
    H = self.n_heads
    w_HC = self.param("gate", param(nn.initializers.normal(self.init_std), ("heads", None)),
                      (H, D // H), self.param_dtype)
    b_H = self.param("gate_bias", param(nn.initializers.zeros, ("heads",)), (H,),
                     self.param_dtype)
    g_BTH = jnp.einsum("bthc,hc->bth", x_BTD.reshape(B, T, H, D // H).astype(jnp.float32),
                       w_HC.astype(jnp.float32))
    return jax.nn.sigmoid(g_BTH + b_H)


def training_mask(T: int, segment_ids_BT=None, window=None):
  """[B or 1, T, T]: key s visible to query t (causal, same segment, within the window)."""
  t = jnp.arange(T)
  vis = (t[None, :, None] >= t[None, None, :])
  if window is not None:
    vis &= t[None, :, None] - t[None, None, :] < window
  if segment_ids_BT is not None:
    vis = vis & (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])
  return vis


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
                    sigmoid_bias=0.0, clip=None):
  """Materialised attention in float32 over the keys `visible_BTS` allows; returns (o_BTHD,
  p_BHTS), p the weights applied (clipped with clip=(zeta, gamma)). One query row per decoding
  step needs no kernel; interpretability hooks and the statistics keep p."""
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
    if clip is not None:     # hidden keys: (zeta - gamma) 0 + gamma <= 0 -> 0
      zeta, gamma = clip
      p_BKGTS = jnp.clip((zeta - gamma) * p_BKGTS + gamma, 0.0, 1.0)
  o_BTKGD = jnp.einsum("bkgts,bskd->btkgd", p_BKGTS, v_BSKD.astype(jnp.float32))
  return o_BTKGD.reshape(B, T, H, D).astype(q_BTHD.dtype), p_BKGTS.reshape(B, H, T, S)


def cached_attention(mod: nn.Module, q_BTHD, k_BTKD, v_BTKD, positions_BT, logit_scale=1.0, *,
                     kind="softmax", sigmoid_bias=0.0, window=None, clip=None):
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
                         sigmoid_bias=sigmoid_bias, clip=clip)[0]
