"""The Mamba (selective SSM) and Mamba-2 (SSD) mixers, each with a recurrent cache for decoding.

Mamba (Gu & Dao 2023), inner width E = expand·D, state N per channel, low-rank R for Δ:
    x, z = in_proj(u)                      x, z: [B, T, E]
    x = SiLU(causal_depthwise_conv_K(x))
    Δ = softplus(dt_proj(x_proj_R(x)) + dt_bias)     B, C = x_proj_N(x)   (input-dependent)
    y = selective_scan(x, Δ, A = -exp(A_log), B, C) + D ∘ x
    out = out_proj(y · SiLU(z))
The LTI ablation (`selective=False`, the paper's S4-like baseline of §4.1 / Table 1 and of the
Table 7 ablation; S4D-real): Δ, B and C are learned parameters, not functions of x (A as above):
    Δ_e = softplus(dt_bias_e),  B_en, C_en per channel e and state n  (no x_proj, no dt_proj)
    h_t = exp(Δ A) ∘ h_{t-1} + Δ u_t B     y_t = Σ_n h_t C,   per channel
It runs through the same selective-scan kernel, with each (channel, state) pair as a channel of
a scan whose state size is 1: u'_{t,(e,n)} = u_{t,e} B_en, Δ' = Δ_e and A' = A_en broadcast to
[B, T, E·N], B' = C' = 1 ([B, T, 1]); y_e = Σ_n C_en y'_{(e,n)}. The scan's work is unchanged (E·N
state elements per token); u', Δ' and their gradients are [B, T, E·N] float32 tensors, N times
the size of x (the selective path's Δ is [B, T, E]).
Mamba-2 (Dao & Gu 2024): heads H = E / P with a scalar decay per head, B/C shared by G groups of
heads, the conv over x, B and C, and a gated RMSNorm (per group) before out_proj:
    z, x, B, C, dt = in_proj(u);  x, B, C = SiLU(conv(x, B, C));  Δ = softplus(dt + dt_bias)
    y = ssd(x, Δ, A = -exp(A_log), B, C) + D_h x;   out = out_proj(RMSNorm_G(y · SiLU(z)))
The reference's single fused in_proj is split into z|x, B|C and dt projections here so each
kernel carries one logical sharding (x, z and dt shard by head; B and C are replicated); the
parameter count is the same. Inits follow state-spaces/mamba: A_log = log(1..N) (S4D-real) for
Mamba-1 and log U(1, 16) per head for Mamba-2; dt_bias = softplus⁻¹ of a log-uniform draw in
[dt_min, dt_max]; D = 1; the conv is PyTorch's default U(±1/√K).

Decoding (`decode=True`) keeps per layer, in flax's "cache" collection, the last K-1 conv inputs
and the SSM state (float32). One token steps the recurrence directly (an independent path from
the chunked kernels, which tests compare it against); several tokens (a prefill) run the
chunked kernel from the cached state and store the final state it returns.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

import kernels
from layers.block import TokenMixer
from layers.dense import Dense
from layers.norm import Norm
from layers import sharding
from layers.sharding import constrain, param


def uniform(lo: float, hi: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, lo, hi)


def dt_bias_init(dt_min: float, dt_max: float, floor: float = 1e-4):
  """softplus⁻¹(dt) with dt log-uniform in [dt_min, dt_max]: Δ starts at sensible time scales."""
  def init(key, shape, dtype=jnp.float32):
    lo, hi = math.log(dt_min), math.log(dt_max)
    dt = jnp.maximum(jnp.exp(jax.random.uniform(key, shape, jnp.float32, lo, hi)), floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)
  return init


def s4d_real_init(key, shape, dtype=jnp.float32):
  """A_log[e, n] = log(n + 1): A = -(1, 2, ..., N) for every channel (S4D-real)."""
  del key
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[-1] + 1, dtype=jnp.float32)),
                          shape).astype(dtype)


def log_uniform_init(lo: float, hi: float):
  return lambda key, shape, dtype=jnp.float32: jnp.log(
      jax.random.uniform(key, shape, jnp.float32, lo, hi)).astype(dtype)


class CausalConv(nn.Module):
  """Depthwise causal conv over time (width K, with bias) on x [B, T, *C].

  y_t = b + Σ_k w_k x_{t-K+1+k}; training pads K-1 zeros in front, decoding prepends the cached
  last K-1 inputs instead (zeros at the start: the same thing).
  """
  width: int
  names: tuple                  # logical names of the feature dims C
  decode: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTC):
    K, C, T = self.width, x_BTC.shape[2:], x_BTC.shape[1]
    bound = 1.0 / math.sqrt(K)
    w_KC = self.param("kernel", param(uniform(-bound, bound), (None,) + self.names), (K,) + C,
                      self.param_dtype)
    b_C = self.param("bias", param(uniform(-bound, bound), self.names), C, self.param_dtype)
    x_BTC = x_BTC.astype(self.dtype)
    if self.decode:
      ready = self.has_variable("cache", "conv_state")
      state = self.variable("cache", "conv_state", jnp.zeros, (x_BTC.shape[0], K - 1) + C,
                            self.dtype)
      xp_BSC = jnp.concatenate([state.value.astype(self.dtype), x_BTC], axis=1)
      if ready:
        state.value = xp_BSC[:, T:]
    else:
      xp_BSC = jnp.pad(x_BTC, [(0, 0), (K - 1, 0)] + [(0, 0)] * len(C))
    w_KC = w_KC.astype(self.dtype)
    y_BTC = sum(xp_BSC[:, k:k + T] * w_KC[k] for k in range(K))
    return y_BTC + b_C.astype(self.dtype)


class DtProj(nn.Module):
  """Mamba-1's rank-R Δ projection R -> E; kernel U(±R^-½), bias = dt_bias_init."""
  features: int
  dt_min: float
  dt_max: float
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTR):
    R = x_BTR.shape[-1]
    w = self.param("kernel", param(uniform(-R**-0.5, R**-0.5), (None, "mlp")),
                   (R, self.features), self.param_dtype)
    b = self.param("bias", param(dt_bias_init(self.dt_min, self.dt_max), ("mlp",)),
                   (self.features,), self.param_dtype)
    return (x_BTR.astype(self.dtype) @ w.astype(self.dtype)).astype(jnp.float32) + b


def no_packing(segment_ids_BT):
  if segment_ids_BT is not None:
    raise ValueError("the SSM scans have no state reset: packed sequences (segment ids) would "
                     "carry state across document boundaries")


class _SSM(TokenMixer, kw_only=True):
  """What both mixers share: the conv and scan settings, and running the scan or, decoding, the
  recurrence from the cached SSM state."""
  d_state: int = 16              # N
  d_conv: int = 4                # K, the causal conv's width
  expand: int = 2                # E = expand * D
  dt_min: float = 0.001          # the initial Δ range (dt_bias_init)
  dt_max: float = 0.1
  chunk: int = 64                # the scan kernel's chunk

  def scan_or_step(self, state_shape, one_token: bool, scan, step):
    """y over the tokens. Training: the chunked `scan(None)`. Decoding: one token advances the
    recurrence directly (`step(h)`, a path independent of the kernel), several (a prefill) run
    `scan(h)` from the cached state; both return (y, final state), which is stored in the
    "cache" collection (not during init, which only creates it)."""
    if not self.decode:
      return scan(None)[0]
    ready = self.has_variable("cache", "ssm_state")
    h = self.variable("cache", "ssm_state", jnp.zeros, state_shape, jnp.float32)
    y, h_final = step(h.value) if one_token and ready else scan(h.value)
    if ready:
      h.value = h_final
    return y


class Mamba(_SSM, kw_only=True):
  dt_rank: int                   # R (the reference's default: ceil(D / 16)); unused if not selective
  selective: bool = True         # False: the LTI ablation (module doc): Δ, B, C are parameters

  @nn.compact
  def __call__(self, u_BTD, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    no_packing(segment_ids_BT)
    Bsz, T, D = u_BTD.shape
    E, N, R = self.expand * D, self.d_state, self.dt_rank
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    xz_BT2E = Dense((2, E), ("embed", None, "mlp"), use_bias=self.use_bias,
                    init_std=self.init_std, name="in_proj", **kw)(u_BTD)
    x_BTE = nn.silu(CausalConv(self.d_conv, ("mlp",), self.decode, name="conv", **kw)(
        xz_BT2E[..., 0, :]))
    x_BTE = constrain(x_BTE, ("batch", "length", "act_mlp"))
    A_EN = -jnp.exp(self.param("A_log", param(s4d_real_init, ("mlp", None)), (E, N),
                               self.param_dtype).astype(jnp.float32))
    D_E = self.param("D", param(nn.initializers.ones, ("mlp",)), (E,), self.param_dtype)
    if self.selective:
      scan, step = self.selective_scan(x_BTE, A_EN, R, **kw)
    else:
      scan, step = self.lti_scan(x_BTE, A_EN)
    y_BTE = self.scan_or_step((Bsz, E, N), T == 1, scan, step)
    y_BTE = (y_BTE + x_BTE * D_E.astype(self.dtype)) * nn.silu(xz_BT2E[..., 1, :])
    return Dense((D,), ("mlp", "embed"), use_bias=self.use_bias, init_std=self.out_std,
                 name="out_proj", **kw)(y_BTE)

  def selective_scan(self, x_BTE, A_EN, R, **kw):
    """(scan, step) of the selective SSM: Δ, B, C projected from x (x_proj, dt_proj)."""
    E, N = A_EN.shape
    dbc_BTJ = Dense((R + 2 * N,), ("mlp", None), use_bias=False, init_std=self.init_std,
                    name="x_proj", **kw)(x_BTE)
    delta_BTE = jax.nn.softplus(DtProj(E, self.dt_min, self.dt_max, name="dt_proj", **kw)(
        dbc_BTJ[..., :R]))
    B_BTN, C_BTN = dbc_BTJ[..., R:R + N], dbc_BTJ[..., R + N:]
    for name, v in (("delta", delta_BTE), ("B", B_BTN), ("C", C_BTN)):
      self.sow("intermediates", name, v)   # tests: what depends on x (nothing unless mutable)
    # Per shard of the mesh: batch and channels split, B and C (shared by all channels) whole.
    BTE, BTN = ("batch", "length", "act_mlp"), ("batch", "length", None)
    BEN = ("batch", "act_mlp", None)
    kernel = sharding.shard_map_kernel(
        lambda u, dt, A, B, C, h0: kernels.selective_scan(u, dt, A, B, C, initial_state_BDN=h0,
                                                          chunk_size=self.chunk, impl=self.impl),
        (BTE, BTE, ("act_mlp", None), BTN, BTN, BEN), (BTE, BEN))
    scan = lambda h0: kernel(x_BTE, delta_BTE, A_EN, B_BTN, C_BTN, h0)

    def step(h_BEN):
      y_BE, h_BEN = selective_step(x_BTE[:, 0], delta_BTE[:, 0], A_EN, B_BTN[:, 0], C_BTN[:, 0],
                                   h_BEN)
      return y_BE[:, None].astype(x_BTE.dtype), h_BEN
    return scan, step

  def lti_scan(self, x_BTE, A_EN):
    """(scan, step) of the LTI ablation (module doc): Δ_e = softplus(dt_bias_e), B_en and C_en
    learned (S4D's init: B = 1, C ~ N(0, 1)), the scan over E·N channels of state size 1."""
    Bsz, _, E = x_BTE.shape
    N = A_EN.shape[1]
    f32 = jnp.float32
    dt_bias_E = self.param("dt_bias", param(dt_bias_init(self.dt_min, self.dt_max), ("mlp",)),
                           (E,), self.param_dtype)
    B_EN = self.param("B", param(nn.initializers.ones, ("mlp", None)), (E, N),
                      self.param_dtype).astype(f32)
    C_EN = self.param("C", param(nn.initializers.normal(1.0), ("mlp", None)), (E, N),
                      self.param_dtype).astype(f32)
    delta_E = jax.nn.softplus(dt_bias_E.astype(f32))
    for name, v in (("delta", delta_E), ("B", B_EN), ("C", C_EN)):
      self.sow("intermediates", name, v)
    BTF, BF1 = ("batch", "length", "act_mlp"), ("batch", "act_mlp", None)

    def per_pair(u_BTE, delta_E, A_EN, B_EN, C_EN, h0_BF1):
      """Per shard (batch and channels split): the scan over the shard's (e, n) pairs."""
      b, t, e = u_BTE.shape
      n = A_EN.shape[1]
      u_BTF = (u_BTE.astype(f32)[..., None] * B_EN).reshape(b, t, e * n)
      d_BTF = jnp.broadcast_to(jnp.repeat(delta_E, n), (b, t, e * n))
      ones = jnp.ones((b, t, 1), f32)
      y_BTF, h_BF1 = kernels.selective_scan(u_BTF, d_BTF, A_EN.reshape(e * n, 1), ones, ones,
                                            initial_state_BDN=h0_BF1, chunk_size=self.chunk,
                                            impl=self.impl)
      return jnp.einsum("bten,en->bte", y_BTF.reshape(b, t, e, n), C_EN), h_BF1
    kernel = sharding.shard_map_kernel(
        per_pair, (BTF, ("act_mlp",), ("act_mlp", None), ("act_mlp", None), ("act_mlp", None),
                   BF1), (BTF, BF1))

    def scan(h0_BEN):
      h0 = None if h0_BEN is None else h0_BEN.reshape(Bsz, E * N, 1)
      y_BTE, h_BF1 = kernel(x_BTE, delta_E, A_EN, B_EN, C_EN, h0)
      return y_BTE.astype(x_BTE.dtype), h_BF1.reshape(Bsz, E, N)

    def step(h_BEN):
      y_BE, h_BEN = lti_step(x_BTE[:, 0], delta_E, A_EN, B_EN, C_EN, h_BEN)
      return y_BE[:, None].astype(x_BTE.dtype), h_BEN
    return scan, step


def lti_step(u_BE, delta_E, A_EN, B_EN, C_EN, h_BEN):
  """One token of the LTI ablation in float32: h = exp(ΔA) h + Δ u B;  y = Σ_n h C (per channel)."""
  h_BEN = jnp.exp(delta_E[:, None] * A_EN) * h_BEN + (
      (delta_E * u_BE.astype(jnp.float32))[..., None] * B_EN)
  return jnp.einsum("ben,en->be", h_BEN, C_EN), h_BEN


def selective_step(u_BE, delta_BE, A_EN, B_BN, C_BN, h_BEN):
  """One token of the Mamba-1 recurrence in float32: h = exp(ΔA) h + Δ u B;  y = h·C."""
  f = lambda a: a.astype(jnp.float32)
  delta_BE = f(delta_BE)
  h_BEN = jnp.exp(delta_BE[..., None] * A_EN) * h_BEN + (
      (delta_BE * f(u_BE))[..., None] * f(B_BN)[:, None, :])
  return jnp.einsum("ben,bn->be", h_BEN, f(C_BN)), h_BEN


class Mamba2(_SSM, kw_only=True):
  d_state: int = 128
  head_dim: int = 64             # P (heads H = E / P)
  groups: int = 1                # G, of B and C
  norm_eps: float = 1e-5

  @nn.compact
  def __call__(self, u_BTD, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    no_packing(segment_ids_BT)
    Bsz, T, D = u_BTD.shape
    P, G, N = self.head_dim, self.groups, self.d_state
    E = self.expand * D
    H = E // P
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    proj = lambda shape, names, name: Dense(shape, ("embed",) + names, use_bias=self.use_bias,
                                            init_std=self.init_std, name=name, **kw)(u_BTD)
    zx_BT2HP = proj((2, H, P), (None, "heads", "kv"), "in_proj_zx")
    bc_BT2GN = proj((2, G, N), (None, None, None), "in_proj_bc")
    dt_BTH = proj((H,), ("heads",), "in_proj_dt")
    conv = lambda names, name: CausalConv(self.d_conv, names, self.decode, name=name, **kw)
    x_BTHP = nn.silu(conv(("heads", "kv"), "conv_x")(zx_BT2HP[..., 0, :, :]))
    x_BTHP = constrain(x_BTHP, ("batch", "length", "act_heads", None))
    bc_BT2GN = nn.silu(conv((None, None, None), "conv_bc")(bc_BT2GN))
    B_BTGN, C_BTGN = bc_BT2GN[:, :, 0], bc_BT2GN[:, :, 1]
    dt_bias = self.param("dt_bias", param(dt_bias_init(self.dt_min, self.dt_max), ("heads",)),
                         (H,), self.param_dtype)
    dt_BTH = jax.nn.softplus(dt_BTH.astype(jnp.float32) + dt_bias)
    A_H = -jnp.exp(self.param("A_log", param(log_uniform_init(1.0, 16.0), ("heads",)), (H,),
                              self.param_dtype).astype(jnp.float32))
    D_H = self.param("D", param(nn.initializers.ones, ("heads",)), (H,), self.param_dtype)
    # Per shard of the mesh: batch and heads split; the B/C groups follow their heads.
    BTHP, BTH, BHPN = (("batch", "length", "act_heads", None), ("batch", "length", "act_heads"),
                       ("batch", "act_heads", None, None))
    kernel = sharding.shard_map_kernel(
        lambda x, dt, A, B, C, h0: kernels.ssd(x, dt, A, B, C, initial_state_BHPN=h0,
                                               chunk_size=self.chunk, impl=self.impl),
        (BTHP, BTH, ("act_heads",), BTHP, BTHP, BHPN), (BTHP, BHPN))
    scan = lambda h0: kernel(x_BTHP, dt_BTH, A_H, sharding.repeat_groups(B_BTGN, 2, H),
                             sharding.repeat_groups(C_BTGN, 2, H), h0)

    def step(h_BHPN):
      y_BHP, h_BHPN = ssd_step(x_BTHP[:, 0], dt_BTH[:, 0], A_H, B_BTGN[:, 0], C_BTGN[:, 0], h_BHPN)
      return y_BHP[:, None].astype(x_BTHP.dtype), h_BHPN
    y_BTHP = self.scan_or_step((Bsz, H, P, N), T == 1, scan, step)
    y_BTHP = y_BTHP + x_BTHP * D_H.astype(self.dtype)[:, None]
    g_BTHP = y_BTHP * nn.silu(zx_BT2HP[..., 1, :, :])
    # RMSNorm over each group's E/G channels (the reference's group_size = d_inner / ngroups).
    g_BTE = Norm("rmsnorm", use_bias=False, eps=self.norm_eps, groups=G,
                 param_dtype=self.param_dtype, name="norm")(g_BTHP.reshape(Bsz, T, E))
    return Dense((D,), ("heads", "kv", "embed"), n_in=2, use_bias=self.use_bias,
                 init_std=self.out_std, name="out_proj", **kw)(g_BTE.reshape(Bsz, T, H, P))


def ssd_step(x_BHP, dt_BH, A_H, B_BGN, C_BGN, h_BHPN):
  """One token of the Mamba-2 recurrence in float32: h = exp(Δ a) h + Δ x Bᵀ;  y = h C."""
  f = lambda a: a.astype(jnp.float32)
  H, G = x_BHP.shape[1], B_BGN.shape[1]
  B_BHN, C_BHN = (jnp.repeat(f(m), H // G, axis=1) for m in (B_BGN, C_BGN))
  dt_BH = f(dt_BH)
  h_BHPN = jnp.exp(dt_BH * A_H)[..., None, None] * h_BHPN + (
      (dt_BH[..., None] * f(x_BHP))[..., None] * B_BHN[:, :, None, :])
  return jnp.einsum("bhpn,bhn->bhp", h_BHPN, C_BHN), h_BHPN
