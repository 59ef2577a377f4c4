"""Head-mixing projections of the Dual-Stream Transformer: structured maps between per-head slices.

A d-vector is viewed as H channels of width E (x_BTHE); the map returns H channels of width F:

  dense        y[h, f] = sum_{g,e} x[g, e] W[g, e, h, f]     W: (H, E, H, F)   any linear map
  kronecker    y[h, e] = sum_g     M[h, g] x[g, e]           M: (H, H)         W = M^T (x) I_E, F == E
  independent  y[h, f] = sum_e     x[h, e] W[h, e, f]        W: (H, E, F)      block-diagonal

Kronecker lets heads exchange scalars while every coordinate stays in place; independent keeps heads
apart but allows any map inside a head. Each is one einsum over (heads, d_head): the lifted (H*E) x
(H*F) matrix is never built (tests build it, as the reference).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from layers.sharding import param

KINDS = ("dense", "kronecker", "independent")


def kron_identity_init(std: float):
  """M = I + N(0, std^2): a Kronecker map that starts as the identity (each head copies itself)."""
  def init(key, shape, dtype=jnp.float32):
    return (jnp.eye(shape[0], dtype=dtype) + std * jax.random.normal(key, shape, dtype)).astype(dtype)
  return init


class HeadMix(nn.Module):
  kind: str                      # dense | kronecker | independent
  d_out: int                     # F, the output width per head (must equal E for kronecker)
  # Logical names of the dense kernel's dims (in-head, in-feature, out-head, out-feature). The
  # independent kernel (H, E, F) takes (out-head or in-head, in-feature, out-feature); M is replicated.
  names: tuple = (None, None, None, None)
  init_std: float = 0.02
  kron_init: str = "identity"    # identity (I + noise) | normal (N(0, init_std))
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BTHE):
    H, E, F = x_BTHE.shape[-2], x_BTHE.shape[-1], self.d_out
    x = x_BTHE.astype(self.dtype)
    normal = nn.initializers.normal(self.init_std)
    if self.kind == "dense":
      w = self.param("kernel", param(normal, self.names), (H, E, H, F), self.param_dtype)
      return jnp.einsum("...ge,gehf->...hf", x, w.astype(self.dtype))
    if self.kind == "kronecker":
      if F != E:
        raise ValueError(f"kronecker mixing preserves the head width: in {E} != out {F}")
      init = kron_identity_init(self.init_std) if self.kron_init == "identity" else normal
      m_HG = self.param("mix", param(init, (None, None)), (H, H), self.param_dtype)
      return jnp.einsum("...ge,hg->...he", x, m_HG.astype(self.dtype))
    if self.kind == "independent":
      n_in, n_ef, n_oh, n_of = self.names
      names = (n_oh or n_in, n_ef, n_of)
      w = self.param("kernel", param(normal, names), (H, E, F), self.param_dtype)
      return jnp.einsum("...he,hef->...hf", x, w.astype(self.dtype))
    raise ValueError(f"head mixing kind {self.kind!r} is not one of {KINDS}")


def n_params(kind: str, H: int, E: int, F: int) -> int:
  """Parameters of one HeadMix (used by flops/parameter formulas)."""
  return {"dense": H * E * H * F, "kronecker": H * H, "independent": H * E * F}[kind]


def n_macs(kind: str, H: int, E: int, F: int) -> int:
  """Multiply-adds per token: Kronecker does H*H*E of them with only H*H parameters."""
  return {"dense": H * E * H * F, "kronecker": H * H * E, "independent": H * E * F}[kind]
