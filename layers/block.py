"""Residual blocks and the layer stack. Blocks take their sublayers as factories, not a config.

A factory is `functools.partial(ModuleClass, **fields)`: the block calls it with a `name`, so the
block decides where a sublayer sits in the parameter tree (attn, mlp, norm1, ...) and the model
decides what it is. Token mixers (layers.attention.Attention, layers.deltanet.DeltaNetMixer,
layers.ssm.Mamba / Mamba2) are called as mixer(x_BTD, positions_BT, segment_ids_BT, logit_scale);
MLPs and norms as f(x_BTD). The mixers' shared settings are TokenMixer's fields.

Block, pre-norm:  x = x + mixer(norm1(x));  x = x + mlp(norm2(x))        (GPT-2, Llama, DeltaNet)
      post-norm:  x = norm1(x + mixer(x));  x = norm2(x + mlp(x))        (original Transformer)
      peri-norm:  x = x + norm3(mixer(norm1(x)));  x = x + norm4(mlp(norm2(x)))
                  (Peri-LN, Kim et al. 2025; the sigmoid-attention paper's "hybrid-norm", AXLearn's
                  "hybridnorm": the same block)
  layer_scale (pre or peri): each branch output times a learned per-channel gamma (init layer_scale)
  before the residual add, as in the sigmoid paper's attention_simulator TransformerBlock (ls1, ls2).
Residual:  x = x + f(norm(x)), one branch (Mamba's block, each layer of a Mamba-2 hybrid).

Every block sows statistics of its output (RMS, max |.|, kurtosis) and of its FFN's output into
the "stats" collection (layers/stats.py): nothing unless the caller makes "stats" mutable.
"""
from __future__ import annotations

import typing

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers import sigma_reparam, stats
from layers.sharding import constrain, param

ACT = ("batch", "length", "act_embed")


class TokenMixer(nn.Module):
  """What the token mixers share: their call, mixer(x_BTD, positions_BT, segment_ids_BT,
  logit_scale), and these settings. Subclasses declare kw_only=True (their own fields come after
  these defaults)."""
  impl: str = "auto"             # kernels impl: auto | xla | pallas | interpret
  use_bias: bool = False         # on the input and output projections
  init_std: float = 0.02
  out_std: float = 0.02          # of the output projection (GPT-2 scales it by 1/sqrt(2L))
  decode: bool = False           # keep and advance a "cache" collection (KV cache, recurrent state)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32


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
  mixer: typing.Callable         # factory of the token mixer
  mlp: typing.Callable           # factory of the MLP
  norm: typing.Callable          # factory of the norms
  mixer_name: str = "attn"
  placement: str = "pre"         # pre | post | peri
  layer_scale: float = 0.0       # LayerScale init; 0 = off; pre or peri
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTD, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    mixer, mlp = self.mixer(name=self.mixer_name), self.mlp(name="mlp")
    n1, n2 = self.norm(name="norm1"), self.norm(name="norm2")

    def branch_out(h_BTD, i):    # what follows branch i (1: mixer, 2: MLP) before the residual
      if self.placement == "peri":
        h_BTD = self.norm(name=f"norm{i + 2}")(h_BTD)
      if self.layer_scale:
        h_BTD = LayerScale(self.layer_scale, self.param_dtype, name=f"ls{i}")(h_BTD)
      return h_BTD
    if self.placement == "post":
      x_BTD = n1(x_BTD + mixer(x_BTD, positions_BT, segment_ids_BT, logit_scale))
      f_BTD = mlp(x_BTD)
      x_BTD = n2(x_BTD + f_BTD)
    else:
      h_BTD = mixer(n1(x_BTD), positions_BT, segment_ids_BT, logit_scale)
      x_BTD = x_BTD + branch_out(h_BTD, 1)
      f_BTD = mlp(n2(x_BTD))
      x_BTD = x_BTD + branch_out(f_BTD, 2)
    sow_outputs(self, x_BTD, f_BTD)
    return constrain(x_BTD, ACT), None


def sow_outputs(block: nn.Module, x_BTD, ffn_BTD=None) -> None:
  """A block's statistics: its output's RMS, max |.| and kurtosis, and its FFN output's."""
  if not stats.wanted(block):
    return
  stats.sow(block, "hidden_rms", stats.rms(x_BTD))
  stats.sow(block, "resid_maxabs", stats.max_abs(x_BTD))
  stats.sow(block, "resid_kurtosis", stats.kurtosis(x_BTD))
  if ffn_BTD is not None:
    stats.sow(block, "ffn_maxabs", stats.max_abs(ffn_BTD))
    stats.sow(block, "ffn_kurtosis", stats.kurtosis(ffn_BTD))


class Residual(nn.Module):
  f: typing.Callable             # factory of the branch
  norm: typing.Callable
  f_name: str = "mixer"
  mixes_tokens: bool = True      # f is a token mixer; False: f(x) only (an MLP)

  @nn.compact
  def __call__(self, x_BTD, positions_BT=None, segment_ids_BT=None, logit_scale=1.0):
    args = (positions_BT, segment_ids_BT, logit_scale) if self.mixes_tokens else ()
    f_BTD = self.f(name=self.f_name)(self.norm(name="norm")(x_BTD), *args)
    x_BTD = x_BTD + f_BTD
    sow_outputs(self, x_BTD, None if self.mixes_tokens else f_BTD)
    return constrain(x_BTD, ACT), None


class Unit(nn.Module):
  """Layers in order, named `names`: one step of a stack that repeats a pattern ("DS", "M*-")."""
  layers: tuple                  # factories
  names: tuple

  @nn.compact
  def __call__(self, x, *args):
    for f, name in zip(self.layers, self.names):
      x = f(name=name)(x, *args)[0]
    return x, None


REMAT_POLICIES = {
    "full": None,                                     # save nothing: recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def stack(layers: typing.Sequence, *, scan: bool = True, remat: str = "none",
          name: str = "layers", names: typing.Sequence[str] | None = None):
  """`layers` (one factory per layer) applied in order; returns a callable (x, *args) -> x.

  scan: one nn.scan over `layers`, which must be one factory repeated ([f] * n): one compiled
  body whatever the depth, named `name`; its parameters, cache, sown intermediates, stats and
  σReparam's u, v get the leading `layers` axis. Otherwise unrolled, layer i named names[i]
  (default f"{name}_{i}"). Each layer returns (x, None), flax's scan convention; x may be a tuple
  (several streams).
  remat: none | full | dots (REMAT_POLICIES), per layer.
  """
  if scan and any(f is not layers[0] for f in layers):
    raise ValueError("stack(scan=True) repeats one layer: pass [f] * n")

  def cls(f):
    if remat == "none":
      return f.func
    return nn.remat(f.func, policy=REMAT_POLICIES[remat], prevent_cse=not scan)
  if scan:
    f = layers[0]
    body = nn.scan(cls(f), variable_axes={"params": 0, "cache": 0, "intermediates": 0, "stats": 0,
                                           sigma_reparam.COLLECTION: 0},
                   split_rngs={"params": True}, in_axes=nn.broadcast, length=len(layers),
                   metadata_params={nn.PARTITION_NAME: "layers"})(*f.args, name=name, **f.keywords)
    return lambda x, *args: body(x, *args)[0]
  names = names or [f"{name}_{i}" for i in range(len(layers))]
  mods = [cls(f)(*f.args, name=n, **f.keywords) for f, n in zip(layers, names)]

  def run(x, *args):
    for m in mods:
      x = m(x, *args)[0]
    return x
  return run
