"""σReparam (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention Entropy
Collapse"): every linear layer uses W_hat = (gamma / sigma(W)) W, sigma(W) W's spectral norm,
gamma a learned scalar (1 at init, the paper's).

sigma(W) = u^T W v with u, v W's leading singular vectors: exact at init (an SVD of the initial
kernel), then refreshed by one power iteration per train step (`power_iteration`, run by the train
step on the updated kernels), as the paper's implementation does. u and v are not parameters: they
live in their own variable collection, COLLECTION ("sigma_reparam"), at the kernel's module path,
as `u` [in dims] and `v` [out dims]. The forward reads them (through stop_gradient); only the
power iteration writes them. The train state carries the collection beside the parameters
(TrainState.buffers), so it checkpoints and resumes bitwise. Evaluation and export read the folded
kernels W_hat (`fold`): the same function, no collection needed.
"""
from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp

COLLECTION, GAMMA = "sigma_reparam", "sigma_gamma"


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


def reparam(w_KN, u_K, v_N, gamma):
  """gamma / sigma(W) * W, in W's dtype: what the layer multiplies by."""
  return (w_KN.astype(jnp.float32) * (gamma / sigma(w_KN, u_K, v_N))).astype(w_KN.dtype)


def _iterate(w_KN, u_K):
  v_N = _unit(u_K @ w_KN)
  return _unit(w_KN @ v_N), v_N


def _each_kernel(params, buffers, f):
  """f(w [K, N], u [K], v [N], gamma) -> tuple, vmapped over any leading stack axes (nn.scan's
  layer axis), for each kernel with u, v in `buffers` ({collection: tree}, TrainState.buffers).
  Yields the module path, (u, v, kernel) as stored, and f's outputs with the stack axes in front."""
  p = flax.traverse_util.flatten_dict(params)
  uv = flax.traverse_util.flatten_dict(buffers.get(COLLECTION, {}))
  for path, u in uv.items():
    if path[-1] != "u":
      continue
    mod = path[:-1]
    w, v = p[mod + ("kernel",)], uv[mod + ("v",)]
    lead = u.ndim + v.ndim - w.ndim                   # stacked layers
    K, N = math.prod(u.shape[lead:]), math.prod(v.shape[lead:])
    g = f
    for _ in range(lead):
      g = jax.vmap(g)
    yield mod, (u, v, w), g(w.reshape(*w.shape[:lead], K, N), u.reshape(*u.shape[:lead], K),
                            v.reshape(*v.shape[:lead], N), p[mod + (GAMMA,)])


def power_iteration(params, buffers):
  """`buffers` after one power iteration on the kernels in `params`:
  v <- W^T u / |W^T u|, u <- W v / |W v|. Without σReparam, `buffers` as they are."""
  if COLLECTION not in buffers:
    return buffers
  out = flax.traverse_util.flatten_dict(buffers[COLLECTION])
  step = lambda w, u, v, g: _iterate(w.astype(jnp.float32), u.astype(jnp.float32))
  for mod, (u, v, _), (u_new, v_new) in _each_kernel(params, buffers, step):
    out[mod + ("u",)] = u_new.reshape(u.shape).astype(u.dtype)
    out[mod + ("v",)] = v_new.reshape(v.shape).astype(v.dtype)
  return {**buffers, COLLECTION: flax.traverse_util.unflatten_dict(out)}


def fold(params, buffers):
  """The parameters of the same model without σReparam: each kernel replaced by
  gamma / sigma(W) * W, gamma dropped (model.sigma_reparam=false reads them)."""
  out = flax.traverse_util.flatten_dict(params)
  for mod, (_, _, w), (w_hat,) in _each_kernel(params, buffers,
                                                lambda w, u, v, g: (reparam(w, u, v, g),)):
    out[mod + ("kernel",)] = w_hat.reshape(w.shape)
    del out[mod + (GAMMA,)]
  return flax.traverse_util.unflatten_dict(out)
