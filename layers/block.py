"""The residual block (attention + MLP) with configurable norm placement, and the layer stack.

pre:  x = x + attn(norm1(x));  x = x + mlp(norm2(x))        (GPT-2, Llama)
post: x = norm1(x + attn(x));  x = norm2(x + mlp(x))        (original Transformer)

Stabilisers for sigmoid attention (Ramapuram et al. 2024), both off by default and pre-norm only:
hybrid_norm: x = x + norm3(attn(norm1(x)));  x = x + norm4(mlp(norm2(x)))   (AXLearn "hybridnorm")
layer_scale: each branch output is multiplied by a learned per-channel gamma (init cfg.layer_scale)
before the residual add, as in the paper's attention_simulator TransformerBlock (ls1, ls2).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from configs.base import ConfigError
from layers.attention import Attention
from layers.mlp import MLP
from layers.norm import Norm
from layers.sharding import constrain, param


def dtypes(cfg):
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def matmul_dtypes(cfg):
  """dtypes() and model.matmul_dtype, for the modules that honour it (attention, MLP, embedding
  and head of the decoder family; configs.base.validate rejects it for the other models)."""
  return dict(dtypes(cfg), matmul_dtype=jnp.dtype(cfg.matmul_dtype or cfg.dtype))


def out_std(cfg):
  """GPT-2's scaled init for projections that write to the residual stream."""
  return cfg.init_std / math.sqrt(2 * cfg.n_layers)


def attention_for(cfg, decode: bool, name: str = "attn", window: int | None = None) -> Attention:
  H = cfg.n_heads
  return Attention(
      n_heads=H, n_kv_heads=cfg.n_kv_heads or H, d_head=cfg.d_head or cfg.d_model // H,
      kind=cfg.attention, sigmoid_bias=-math.log(cfg.max_len), pos=cfg.pos,
      rope_theta=cfg.rope_theta, use_bias=cfg.use_bias, impl=cfg.attn_impl,
      qk_norm=cfg.norm if cfg.qk_norm else "none", qk_norm_eps=cfg.norm_eps, window=window,
      init_std=cfg.init_std, out_std=out_std(cfg), decode=decode, name=name, **matmul_dtypes(cfg))


def norm_for(cfg, name: str, groups: int = 1) -> Norm:
  return Norm(kind=cfg.norm, use_bias=cfg.norm_bias, eps=cfg.norm_eps, groups=groups,
              param_dtype=jnp.dtype(cfg.param_dtype), name=name)


class LayerScale(nn.Module):
  """x * gamma, gamma per channel (CaiT); a small init keeps early residual updates small."""
  init: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD):
    gamma = self.param("scale", param(nn.initializers.constant(self.init), ("norm",)),
                       (x_BTD.shape[-1],), self.param_dtype)
    return (x_BTD * gamma).astype(x_BTD.dtype)


class Block(nn.Module):
  cfg: object                   # configs.base.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    attn = attention_for(cfg, self.decode)
    mlp = MLP(cfg.d_ff, kind=cfg.mlp, gelu_exact=cfg.gelu_exact, use_bias=cfg.use_bias,
              init_std=cfg.init_std, out_std=out_std(cfg), name="mlp", **matmul_dtypes(cfg))
    n1, n2 = norm_for(cfg, "norm1"), norm_for(cfg, "norm2")
    if (cfg.hybrid_norm or cfg.layer_scale) and cfg.norm_placement != "pre":
      raise ConfigError("model.hybrid_norm and model.layer_scale need model.norm_placement=pre")

    def branch_out(h_BTD, i):    # the sigmoid stabilisers on branch i (1: attention, 2: MLP)
      if cfg.hybrid_norm:
        h_BTD = norm_for(cfg, f"norm{i + 2}")(h_BTD)
      if cfg.layer_scale:
        h_BTD = LayerScale(cfg.layer_scale, jnp.dtype(cfg.param_dtype), name=f"ls{i}")(h_BTD)
      return h_BTD
    if cfg.norm_placement == "pre":
      x_BTD = x_BTD + branch_out(attn(n1(x_BTD), positions_BT, segment_ids_BT, logit_scale), 1)
      x_BTD = x_BTD + branch_out(mlp(n2(x_BTD)), 2)
    else:
      x_BTD = n1(x_BTD + attn(x_BTD, positions_BT, segment_ids_BT, logit_scale))
      x_BTD = n2(x_BTD + mlp(x_BTD))
    return constrain(x_BTD, ("batch", "length", "act_embed")), None


REMAT_POLICIES = {
    "full": None,                                     # save nothing: recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def stack(block_cls, cfg, decode: bool, name: str = "layers", **kw):
  """`cfg.n_layers` copies of `block_cls`: scanned (one compiled body whatever the depth) or unrolled.

  Returns a callable (x, *broadcast_args) -> x. Scanned parameters get the leading `layers` axis.
  """
  cls = block_cls
  if cfg.remat != "none":
    cls = nn.remat(cls, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    scanned = nn.scan(cls, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=cfg.n_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})(cfg, decode, name=name, **kw)
    return lambda x, *args: scanned(x, *args)[0]
  blocks = [cls(cfg, decode, name=f"{name}_{i}", **kw) for i in range(cfg.n_layers)]

  def run(x, *args):
    for b in blocks:
      x = b(x, *args)[0]
    return x
  return run
