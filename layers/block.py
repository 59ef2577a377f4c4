"""The residual block (attention + MLP) with configurable norm placement, and the layer stack.

pre:  x = x + attn(norm1(x));  x = x + mlp(norm2(x))        (GPT-2, Llama)
post: x = norm1(x + attn(x));  x = norm2(x + mlp(x))        (original Transformer)
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers.attention import Attention
from layers.mlp import MLP
from layers.norm import Norm
from layers.sharding import constrain


def dtypes(cfg):
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def out_std(cfg):
  """GPT-2's scaled init for projections that write to the residual stream."""
  return cfg.init_std / math.sqrt(2 * cfg.n_layers)


def attention_for(cfg, decode: bool, name: str = "attn") -> Attention:
  H = cfg.n_heads
  return Attention(
      n_heads=H, n_kv_heads=cfg.n_kv_heads or H, d_head=cfg.d_head or cfg.d_model // H,
      kind=cfg.attention, sigmoid_bias=-math.log(cfg.max_len), pos=cfg.pos,
      rope_theta=cfg.rope_theta, use_bias=cfg.use_bias, impl=cfg.attn_impl,
      init_std=cfg.init_std, out_std=out_std(cfg), decode=decode, name=name, **dtypes(cfg))


def norm_for(cfg, name: str, groups: int = 1) -> Norm:
  return Norm(kind=cfg.norm, use_bias=cfg.norm_bias, eps=cfg.norm_eps, groups=groups,
              param_dtype=jnp.dtype(cfg.param_dtype), name=name)


class Block(nn.Module):
  cfg: object                   # configs.base.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, logit_scale):
    cfg = self.cfg
    attn = attention_for(cfg, self.decode)
    mlp = MLP(cfg.d_ff, kind=cfg.mlp, gelu_exact=cfg.gelu_exact, use_bias=cfg.use_bias,
              init_std=cfg.init_std, out_std=out_std(cfg), name="mlp", **dtypes(cfg))
    n1, n2 = norm_for(cfg, "norm1"), norm_for(cfg, "norm2")
    if cfg.norm_placement == "pre":
      x_BTD = x_BTD + attn(n1(x_BTD), positions_BT, segment_ids_BT, logit_scale)
      x_BTD = x_BTD + mlp(n2(x_BTD))
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
