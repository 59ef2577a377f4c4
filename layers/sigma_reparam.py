"""σReparam (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention Entropy
Collapse"): every linear layer uses W_hat = (gamma / sigma(W)) W, sigma(W) W's spectral norm,
gamma a learned scalar (1 at init, the paper's).

sigma(W) = u^T W v with u, v W's leading singular vectors: exact at init (an SVD of the initial
kernel), then refreshed by one power iteration per train step (`power_iteration`, run by the train
step on the updated parameters), as the paper's implementation does. u and v live beside the kernel
in the parameter tree as `sigma_u` [in dims] and `sigma_v` [out dims] but are not trained: the
forward reads them through stop_gradient (zero gradient; the optimizer's decay mask skips them, so
Adam leaves them exactly unchanged), and only the power iteration writes them. They checkpoint and
resume with the parameters, bitwise, and evaluation and export read the same values.
"""
from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp

U, V, GAMMA = "sigma_u", "sigma_v", "sigma_gamma"


def _unit(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def init_uv(w_KN):
  """(u [K], v [N]): the leading left and right singular vectors of a 2-D kernel."""
  u_KK, _, vt_NN = jnp.linalg.svd(w_KN.astype(jnp.float32), full_matrices=False)
  return u_KK[:, 0], vt_NN[0]


def sigma(w_KN, u_K, v_N):
  """u^T W v: the spectral norm of W for W's leading singular vectors (gradient through W only)."""
  u_K, v_N = jax.lax.stop_gradient(u_K), jax.lax.stop_gradient(v_N)
  return jnp.einsum("k,kn,n->", u_K, w_KN.astype(jnp.float32), v_N)


def _iterate(w_KN, u_K):
  v_N = _unit(u_K @ w_KN)
  return _unit(w_KN @ v_N), v_N


def power_iteration(params):
  """One power iteration for every kernel with `sigma_u`/`sigma_v` beside it (any leading stack
  axes, e.g. nn.scan's layer axis): v <- W^T u / |W^T u|, u <- W v / |W v|."""
  flat = flax.traverse_util.flatten_dict(params)
  out = dict(flat)
  for path, u in flat.items():
    if path[-1] != U:
      continue
    w, v = flat[path[:-1] + ("kernel",)], flat[path[:-1] + (V,)]
    lead = u.ndim + v.ndim - w.ndim                   # stacked layers
    K, N = math.prod(u.shape[lead:]), math.prod(v.shape[lead:])
    w2 = w.reshape(*w.shape[:lead], K, N).astype(jnp.float32)
    u2 = u.reshape(*u.shape[:lead], K).astype(jnp.float32)
    f = _iterate
    for _ in range(lead):
      f = jax.vmap(f)
    u_new, v_new = f(w2, u2)
    out[path] = u_new.reshape(u.shape).astype(u.dtype)
    out[path[:-1] + (V,)] = v_new.reshape(v.shape).astype(v.dtype)
  return flax.traverse_util.unflatten_dict(out)

