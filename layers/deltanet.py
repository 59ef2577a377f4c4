"""DeltaNet's sequence mixer (Yang et al. 2024, arXiv:2406.06484); optionally Gated DeltaNet's.

  q, k, v = SiLU(conv(W_q x)), SiLU(conv(W_k x)), SiLU(conv(W_v x))   short causal depthwise convs
  q, k    = q / |q|, k / |k|               per head; unnormalised keys let the recurrence diverge
  beta    = sigmoid(W_beta x)              per head write strength in (0, 1)
  g       = -exp(A_log) softplus(W_a x + dt_bias)   gated delta rule only: per-head log-decay <= 0
  o       = delta_rule(q, k, v, beta, g)   S_t = e^g S;  S_t += k (beta (v - S^T k))^T;  o = S^T q
  y       = W_o [RMSNorm(o) * SiLU(W_g x)]  per-head output norm; the gate is optional (dn_gate)

rule="linear" swaps the update for plain (unnormalised) linear attention, the paper's baseline,
everything else (projections, convs, L2-normalised q and k, output norm and gate) unchanged and no
beta projection:  S_t = S_{t-1} + k_t v_t^T;  o_t = S_t^T (q_t / sqrt(K)).  That is SSD with no
decay (Mamba-2's kernel with A = 0, dt = 1, x = v, B = k, C = q / sqrt(K), one B/C group per
head), so it runs through `kernels.ssd` (its xla, pallas and interpret paths); no decay
(dn_decay) and no packed sequences (their reset is a decay).

Training and evaluation call `kernels.delta_rule` (chunked WY form). With decode=True the "cache"
collection holds, per layer, the last (d_conv - 1) projected inputs of each conv and the state S
[B, H, K, V]; tokens then advance the recurrence one at a time (a lax.scan over the given tokens),
an independent path that tests compare with the chunked kernel.

Packed sequences: a conv never reads across a document boundary, and the state is reset at the
first token of each document by a log-decay of RESET there (e^-30 ~ 1e-13; a larger magnitude would
cost float32 precision in the kernel's within-chunk cumulative sums).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import kernels
from layers.block import TokenMixer
from layers.dense import Dense
from layers.norm import Norm
from layers import sharding
from layers.sharding import constrain, param

RESET = -30.0


def causal_conv(win_BSHD, w_KHD, T: int, seg_BT=None):
  """Depthwise causal conv over a window holding K-1 earlier inputs then the T new ones.

  y_t = sum_j w[j] x_{t-(K-1-j)}: w[K-1] weighs the current token. With segment ids, inputs from
  another document are dropped (the window's first K-1 rows are the zero padding in training).
  """
  K = w_KHD.shape[0]
  y_BTHD = jnp.zeros(win_BSHD.shape[:1] + (T,) + win_BSHD.shape[2:], jnp.float32)
  for j in range(K):
    x_BTHD = win_BSHD[:, j:j + T].astype(jnp.float32)
    back = K - 1 - j
    if seg_BT is not None and back:
      src_BT = jnp.pad(seg_BT, ((0, 0), (back, 0)), constant_values=-1)[:, :T]
      x_BTHD = jnp.where((src_BT == seg_BT)[:, :, None, None], x_BTHD, 0.0)
    y_BTHD = y_BTHD + x_BTHD * w_KHD[j].astype(jnp.float32)
  return y_BTHD


def l2_normalize(x, eps=1e-6):
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def recurrent(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, s_BHKV, scale: float,
              linear: bool = False):
  """The delta rule (linear: plain linear attention, S += k v^T, beta unused) one token at a time
  (decode); returns (o_BTHV float32, final state)."""
  def step(s, inp):
    q, k, v, b, g = inp
    s = s * jnp.exp(g)[..., None, None]
    u_BHV = v if linear else b[..., None] * (v - jnp.einsum("bhkv,bhk->bhv", s, k))
    s = s + jnp.einsum("bhk,bhv->bhkv", k, u_BHV)
    return s, jnp.einsum("bhkv,bhk->bhv", s, q * scale)
  xs = [jnp.swapaxes(a.astype(jnp.float32), 0, 1) for a in (q_BTHK, k_BTHK, v_BTHV, beta_BTH,
                                                             g_BTH)]
  s_BHKV, o_TBHV = jax.lax.scan(step, s_BHKV, xs)
  return jnp.swapaxes(o_TBHV, 0, 1), s_BHKV


def _sym_uniform(bound):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _a_log_init(key, shape, dtype=jnp.float32):
  return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, 16.0))   # A in [1, 16], as Mamba-2


def _dt_bias_init(key, shape, dtype=jnp.float32):
  """softplus^-1 of dt ~ log-uniform [1e-3, 0.1]: the initial decay rates span two decades."""
  dt = jnp.exp(jax.random.uniform(key, shape, dtype, jnp.log(1e-3), jnp.log(0.1)))
  dt = jnp.maximum(dt, 1e-4)
  return dt + jnp.log(-jnp.expm1(-dt))


class DeltaNetMixer(TokenMixer, kw_only=True):
  n_heads: int
  d_head: int                    # K = V: key and value head dims (expand_k = expand_v = 1)
  d_conv: int = 4
  gate: bool = False
  decay: bool = False
  chunk_size: int = 64
  norm_eps: float = 1e-6
  rule: str = "delta"            # "delta" | "linear" (plain linear attention, module doc)

  def dense(self, x, shape, names, name, std=None, n_in=1, bias=None):
    return Dense(shape, names, n_in=n_in, use_bias=self.use_bias if bias is None else bias,
                 init_std=self.init_std if std is None else std, dtype=self.dtype,
                 param_dtype=self.param_dtype, name=name)(x)

  def conv(self, x_BTHD, name, seg_BT, ready):
    """SiLU(causal depthwise conv): zero history in training, the cached inputs when decoding."""
    K, T = self.d_conv, x_BTHD.shape[1]
    if K == 0:
      return jax.nn.silu(x_BTHD)
    w_KHD = self.param(f"conv_{name}", param(_sym_uniform(K ** -0.5), (None, "heads", "kv")),
                       (K,) + x_BTHD.shape[2:], self.param_dtype)
    if self.decode:
      hist = self.variable("cache", f"conv_{name}", jnp.zeros,
                           x_BTHD.shape[:1] + (K - 1,) + x_BTHD.shape[2:], x_BTHD.dtype)
      win_BSHD = jnp.concatenate([hist.value, x_BTHD], axis=1)
      if ready:
        hist.value = win_BSHD[:, win_BSHD.shape[1] - (K - 1):]
    else:
      win_BSHD = jnp.pad(x_BTHD, ((0, 0), (K - 1, 0), (0, 0), (0, 0)))
    return jax.nn.silu(causal_conv(win_BSHD, w_KHD, T, seg_BT)).astype(x_BTHD.dtype)

  @nn.compact
  def __call__(self, x_BTD, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    del positions_BT, logit_scale   # order comes from the recurrence; no softmax to scale
    H, K = self.n_heads, self.d_head
    ready = self.has_variable("cache", "state")   # False while init() creates the cache
    names = ("embed", "heads", "kv")
    q_BTHK = self.conv(self.dense(x_BTD, (H, K), names, "query"), "q", segment_ids_BT, ready)
    k_BTHK = self.conv(self.dense(x_BTD, (H, K), names, "key"), "k", segment_ids_BT, ready)
    v_BTHV = self.conv(self.dense(x_BTD, (H, K), names, "value"), "v", segment_ids_BT, ready)
    q_BTHK = l2_normalize(q_BTHK).astype(self.dtype)
    k_BTHK = l2_normalize(k_BTHK).astype(self.dtype)
    q_BTHK = constrain(q_BTHK, ("batch", "length", "act_heads", None))
    linear = self.rule == "linear"
    if self.rule not in ("delta", "linear"):
      raise ValueError(f"rule={self.rule!r} is not 'delta' or 'linear'")
    if linear and (self.decay or segment_ids_BT is not None):
      raise ValueError("rule='linear' takes no decay and no packed sequences (segment ids)")
    beta_BTH = jnp.ones(x_BTD.shape[:2] + (H,), jnp.float32) if linear else jax.nn.sigmoid(
        self.dense(x_BTD, (H,), ("embed", "heads"), "beta", bias=False).astype(jnp.float32))
    g_BTH = jnp.zeros(beta_BTH.shape, jnp.float32)
    if self.decay:
      a_log_H = self.param("A_log", param(_a_log_init, ("heads",)), (H,), jnp.float32)
      dt_bias_H = self.param("dt_bias", param(_dt_bias_init, ("heads",)), (H,), jnp.float32)
      a_BTH = self.dense(x_BTD, (H,), ("embed", "heads"), "decay", bias=False).astype(jnp.float32)
      g_BTH = -jnp.exp(a_log_H) * jax.nn.softplus(a_BTH + dt_bias_H)
    if segment_ids_BT is not None:   # a new document starts where the segment id changes
      prev_BT = jnp.pad(segment_ids_BT, ((0, 0), (1, 0)), mode="edge")[:, :-1]
      g_BTH = g_BTH + jnp.where(segment_ids_BT != prev_BT, RESET, 0.0)[:, :, None]

    if self.decode:
      state = self.variable("cache", "state", jnp.zeros, (x_BTD.shape[0], H, K, K), jnp.float32)
      o_BTHV, s_BHKV = recurrent(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, state.value, K ** -0.5,
                                 linear)
      if ready:
        state.value = s_BHKV
    elif linear:   # SSD with no decay: A = 0, dt = 1, x = v, B = k, C = q / sqrt(K), G = H
      def ssd(q, k, v):
        b, t, h, _ = q.shape
        o, s_BHVK = kernels.ssd(v, jnp.ones((b, t, h), jnp.float32), jnp.zeros((h,), jnp.float32),
                                k, q * K ** -0.5, chunk_size=self.chunk_size, impl=self.impl)
        return o, jnp.swapaxes(s_BHVK, -1, -2)
      BTHD = ("batch", "length", "act_heads", None)
      o_BTHV, _ = sharding.shard_map_kernel(   # per shard of the mesh: batch, heads split
          ssd, (BTHD, BTHD, BTHD), (BTHD, ("batch", "act_heads", None, None)))(
              q_BTHK, k_BTHK, v_BTHV)
    else:
      rule = lambda q, k, v, beta, g: kernels.delta_rule(q, k, v, beta, g,
                                                         chunk_size=self.chunk_size, impl=self.impl)
      BTH, BTHD = ("batch", "length", "act_heads"), ("batch", "length", "act_heads", None)
      o_BTHV, _ = sharding.shard_map_kernel(   # per shard of the mesh: batch, heads split
          rule, (BTHD, BTHD, BTHD, BTH, BTH), (BTHD, ("batch", "act_heads", None, None)))(
              q_BTHK, k_BTHK, v_BTHV, beta_BTH,
              g_BTH if self.decay or segment_ids_BT is not None else None)
    o_BTHV = Norm("rmsnorm", eps=self.norm_eps, param_dtype=self.param_dtype,
                  name="out_norm")(o_BTHV.astype(jnp.float32))
    if self.gate:
      o_BTHV = o_BTHV * jax.nn.silu(self.dense(x_BTD, (H, K), names, "gate").astype(jnp.float32))
    o_BTHV = constrain(o_BTHV.astype(self.dtype), ("batch", "length", "act_heads", None))
    return self.dense(o_BTHV, (x_BTD.shape[-1],), ("heads", "kv", "embed"), "out",
                      std=self.out_std, n_in=2)
