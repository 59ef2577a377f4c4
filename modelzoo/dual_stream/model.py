"""The Dual-Stream Transformer (Kerce & Fox 2026, arXiv:2603.07461): two residual streams per block.

    x_t = W_E[tok],  x_e = 0                     (no position vector: RoPE acts inside attention)
    per block:  u = CLN1(x_t + x_e)                          Q, K read the combined state
                v = Mix_V(CLN_v(x_t))                        V reads the TOKEN stream only
                x_t += Mix_O(softmax(a * q k^T / sqrt(d_h)) v)   attention writes x_t (FTS: x_e)
                x_e += Mix_down(GELU(Mix_up(CLN2(x_t + x_e))))   the FFN writes x_e
    logits = LN_f(x_t + x_e) W_E^T

CLN is LayerNorm per head slice (Norm(groups=H)); Mix_* are layers/head_mix.py maps chosen per
projection (model.mix_v/mix_o/mix_up/mix_down). `a` is eval.py's --logit-scale (attention
amplification), applied in the kernel path, the explicit path and the KV-cache decode path alike.
The paper's facts, the points it leaves open and our choices: docs/dual_stream.md.

Interpretability: with mutable=["intermediates"] every block sows both streams and its attention
probabilities (attention then runs the explicit jnp path so the maps are the ones used); `interpret()`
turns these into per-layer logit-lens readouts of each stream.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers.attention import attend, attend_explicit, cached_attention
from layers.block import stack
from layers.dense import Dense
from layers.embed import Embed, rope
from layers.head_mix import HeadMix, n_macs
from layers.sharding import constrain
from modelzoo import common


class DualStreamAttention(nn.Module):
  cfg: object
  decode: bool = False

  @nn.compact
  def __call__(self, u_BTD, xv_BTD, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    H, Dh = cfg.n_heads, cfg.head_dim
    B, T, D = u_BTD.shape
    kw = dict(init_std=cfg.init_std, **common.dtypes(cfg))
    qk = lambda name: Dense((H, Dh), ("embed", "heads", "kv"), use_bias=False, name=name, **kw)(u_BTD)
    q_BTHD, k_BTHD = qk("query"), qk("key")
    # V: head-mixed channels of the token stream (never x_e). Kronecker M_V and M_O take their own
    # init (model.kron_init_v/_o, kron_std_v/_o); dense and independent maps keep GPT-2's.
    v_kind, v_std = cfg.kron_init_v_resolved
    v_BTHD = HeadMix(cfg.mix_v, Dh, (None, "embed", "heads", "kv"),
                     init_std=v_std if cfg.mix_v == "kronecker" else cfg.init_std,
                     kron_init=v_kind, name="value", **common.dtypes(cfg))(xv_BTD.reshape(B, T, H, Dh))
    if cfg.pos == "rope":
      q_BTHD = rope(q_BTHD, positions_BT, cfg.rope_theta)
      k_BTHD = rope(k_BTHD, positions_BT, cfg.rope_theta)
    q_BTHD = constrain(q_BTHD, ("batch", "length", "act_heads", None))
    if self.decode:
      o_BTHD = cached_attention(self, q_BTHD, k_BTHD, v_BTHD, positions_BT, logit_scale)
    elif self.is_mutable_collection("intermediates"):   # hooks on: materialise and keep the maps
      visible_BTS = jnp.tril(jnp.ones((T, T), bool))[None]
      if segment_ids_BT is not None:
        visible_BTS = visible_BTS & (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])
      o_BTHD, p_BHTS = attend_explicit(q_BTHD, k_BTHD, v_BTHD, visible_BTS, logit_scale)
      self.sow("intermediates", "probs", p_BHTS)
    else:
      o_BTHD = attend(q_BTHD, k_BTHD, v_BTHD, segment_ids_BT, logit_scale, impl=cfg.attn_impl)
    o_BTHD = constrain(o_BTHD, ("batch", "length", "act_heads", None))
    o_kind, o_std = cfg.kron_init_o_resolved
    y_BTHD = HeadMix(cfg.mix_o, Dh, ("heads", "kv", None, "embed"),
                     init_std=o_std if cfg.mix_o == "kronecker" else common.out_std(cfg),
                     kron_init=o_kind, name="out", **common.dtypes(cfg))(o_BTHD)
    return y_BTHD.reshape(B, T, D)


class DualStreamFFN(nn.Module):
  cfg: object

  @nn.compact
  def __call__(self, w_BTD):
    cfg = self.cfg
    H, Dh, Fh = cfg.n_heads, cfg.head_dim, cfg.ffn_head_dim
    B, T, D = w_BTD.shape
    # The hidden units are laid out (H, F/H) whatever the mixing, so dense and per-head FFNs share
    # one code path: a dense up map is just a full (H, Dh, H, F/H) kernel.
    h_BTHF = HeadMix(cfg.mix_up, Fh, (None, "embed", "mlp", None), init_std=cfg.init_std,
                     name="up", **common.dtypes(cfg))(w_BTD.reshape(B, T, H, Dh))
    h_BTHF = jax.nn.gelu(h_BTHF, approximate=not cfg.gelu_exact)
    y_BTHD = HeadMix(cfg.mix_down, Dh, ("mlp", None, None, "embed"),
                     init_std=common.out_std(cfg), name="down", **common.dtypes(cfg))(h_BTHF)
    return y_BTHD.reshape(B, T, D)


class DualStreamBlock(nn.Module):
  cfg: object
  decode: bool = False

  @nn.compact
  def __call__(self, carry, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    xt_BTD, xe_BTD = carry
    cln = common.norm(cfg, groups=cfg.n_heads if cfg.cln else 1)
    u_BTD = cln(name="cln1")(xt_BTD + xe_BTD)
    xv_BTD = cln(name="cln_v")(xt_BTD) if cfg.v_norm else xt_BTD
    y_BTD = DualStreamAttention(cfg, self.decode, name="attn")(u_BTD, xv_BTD, positions_BT,
                                                               segment_ids_BT, logit_scale)
    if cfg.frozen_tokens:
      xe_BTD = xe_BTD + y_BTD
    else:
      xt_BTD = xt_BTD + y_BTD
    xe_BTD = xe_BTD + DualStreamFFN(cfg, name="ffn")(cln(name="cln2")(xt_BTD + xe_BTD))
    self.sow("intermediates", "x_t", xt_BTD)
    self.sow("intermediates", "x_e", xe_BTD)
    names = ("batch", "length", "act_embed")
    return (constrain(xt_BTD, names), constrain(xe_BTD, names)), None


class DualStreamLM(nn.Module):
  cfg: object                   # DualStreamConfig (modelzoo/dual_stream/config.py)
  decode: bool = False

  def setup(self):
    cfg = self.cfg
    self.embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, name="embed",
                       **common.dtypes(cfg))
    # the carry is (x_t, x_e); sown intermediates are stacked over layers like the parameters
    self.layers = stack([functools.partial(DualStreamBlock, cfg, self.decode)] * cfg.n_layers,
                        scan=cfg.scan_layers, remat=cfg.remat)
    self.norm_f = common.norm(cfg)(name="norm_f")   # a plain LN over all of D before the read-out
    if not cfg.tie_embeddings:
      self.head = Dense((cfg.vocab_size,), ("embed", "vocab"), use_bias=False,
                        init_std=cfg.init_std, name="head", **common.dtypes(cfg))

  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    xt_BTD = constrain(self.embed(tokens_BT), ("batch", "length", "act_embed"))
    xt_BTD, xe_BTD = self.layers((xt_BTD, jnp.zeros_like(xt_BTD)), positions_BT, segment_ids_BT,
                                 logit_scale)
    return self.readout(xt_BTD + xe_BTD)

  def readout(self, x_BTD):
    """LN_f then the (tied) unembedding: the model's head, and the logit lens of any stream."""
    x_BTD = self.norm_f(x_BTD)
    logits_BTV = self.embed.attend(x_BTD) if self.cfg.tie_embeddings else self.head(x_BTD)
    return constrain(logits_BTV, ("batch", "length", "act_vocab"))

  def embedding(self):
    return self.embed.table_VD


@functools.partial(jax.jit, static_argnames=("model_cfg", "per_head"))
def interpret(params, tokens_BT, positions_BT=None, segment_ids_BT=None, *, model_cfg,
              logit_scale=1.0, per_head=False):
  """One forward pass with the hooks on. Returns a dict of arrays (l = 0..L, 0 = before block 1):

    logits [B,T,V]              the model's output (equal to the plain forward pass)
    attn   [L,B,H,T,T]          per-head attention probabilities (query t, key s)
    x_t, x_e [L+1,B,T,D]        the two streams after each block (x_t[0] = embedding, x_e[0] = 0)
    lens_t, lens_e, lens [L+1,B,T,V]   logit lens LN_f(stream) W_E^T of x_t, x_e and x_t + x_e
    lens_t_heads [L+1,B,T,H,V]  (per_head) channel h of x_t against channel h of W_E: the token
                                stream's per-head vocabulary readout (exact in token units for
                                Kronecker/identity mixing with raw V)
  """
  model = DualStreamLM(model_cfg)
  logits_BTV, state = model.apply({"params": params}, tokens_BT, positions_BT, segment_ids_BT,
                                  logit_scale=logit_scale, mutable=["intermediates"])
  inter = state["intermediates"]
  if model_cfg.scan_layers:
    layer = lambda *path: functools.reduce(lambda d, k: d[k], path, inter["layers"])[0]
  else:
    layer = lambda *path: jnp.stack([functools.reduce(lambda d, k: d[k], path, inter[f"layers_{i}"])[0]
                                     for i in range(model_cfg.n_layers)])
  x0_BTD = model.apply({"params": params}, tokens_BT, method=lambda m, t: m.embed(t))
  x_t = jnp.concatenate([x0_BTD[None], layer("x_t")])
  x_e = jnp.concatenate([jnp.zeros_like(x0_BTD)[None], layer("x_e")])
  lens = jax.vmap(lambda x: model.apply({"params": params}, x, method=DualStreamLM.readout))
  out = {"logits": logits_BTV, "attn": layer("attn", "probs"), "x_t": x_t, "x_e": x_e,
         "lens_t": lens(x_t), "lens_e": lens(x_e), "lens": lens(x_t + x_e)}
  if per_head:
    H = model_cfg.n_heads
    E_VHD = model.apply({"params": params}, method=DualStreamLM.embedding)
    E_VHD = E_VHD.reshape(E_VHD.shape[0], H, -1)
    out["lens_t_heads"] = jnp.einsum("lbthd,vhd->lbthv", x_t.reshape(*x_t.shape[:-1], H, -1), E_VHD)
  return out


def flops_per_token(m, n_params: int, seq_len: int) -> float:
  """6 x matmul MACs + attention; not 6N, since a Kronecker map does H*H*d_h MACs with H*H params."""
  H, Dh, Fh = m.n_heads, m.head_dim, m.ffn_head_dim
  layer = (2 * m.d_model ** 2 + n_macs(m.mix_v, H, Dh, Dh) + n_macs(m.mix_o, H, Dh, Dh)
           + n_macs(m.mix_up, H, Dh, Fh) + n_macs(m.mix_down, H, Fh, Dh))
  return 6.0 * (m.n_layers * layer + m.vocab_size * m.d_model) + kernel_flops_per_token(m, seq_len)


def kernel_flops_per_token(m, seq_len: int) -> float:
  """Attention's scores and values (H heads of d_model/H channels), fwd + bwd."""
  return 12.0 * m.n_layers * m.d_model * seq_len
