"""Sigmoid attention (FlashSigmoid): the oracle vs a direct formula; the blockwise jnp path and the
Pallas kernels (interpreted) vs the oracle; TPU/CUDA lowering. Sigmoid is the "sigmoid" kind of
the attention machinery, so mask/GQA/ragged plumbing is tested more fully in test_attention.py.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels import sigmoid_attention
from kernels._attn_common import Spec
from kernels.attention import api, pallas_gpu, pallas_tpu
from kernels.attention.reference import blockwise, naive

BACKENDS = {"tpu": pallas_tpu, "gpu": pallas_gpu}
BLOCKS = {"tpu": (64, 128), "gpu": (32, 64)}
# (B, T, S, H, K, D, causal, window): GQA G=3, ragged, T != S, window, segments with a hole
PACKED = (2, 150, 200, 6, 2, 24, True, 90)


def make_inputs(B, T, S, H, K, D, dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  shapes = [(B, T, H, D), (B, S, K, D), (B, S, K, D), (B, T, H, D)]
  return tuple(jnp.asarray(rng.standard_normal(sh, np.float32)).astype(dtype) for sh in shapes)


def make_segments(B, T, S):
  """Packed documents of ~80 tokens aligned with absolute positions; batch 0's first 3 queries
  get an id no key has (they must return exactly 0)."""
  kv = (np.arange(S)[None] + 30 * np.arange(B)[:, None]) // 80
  q = kv[:, S - T:].copy()
  q[0, :3] = 999
  return jnp.asarray(q, jnp.int32), jnp.asarray(kv, jnp.int32)


def spec_of(case, bias=-2.0):
  B, T, S, H, K, D, causal, window = case
  return Spec("sigmoid", causal, window, D ** -0.5, None, bias, T, S)


def fwd_vjp(fn):
  def f(qkv, segs, w):
    o, vjp = jax.vjp(lambda *a: fn(*a, *segs), *qkv)
    return o, vjp(w.astype(o.dtype))
  return jax.jit(f)


def oracle(spec, qkv, segs, w):
  with jax.enable_x64(True):
    f64 = lambda t: tuple(jnp.asarray(np.asarray(a, np.float64)) for a in t)
    out = fwd_vjp(lambda q, k, v, *s: naive(q, k, v, spec, *s))(f64(qkv), segs, f64([w])[0])
    return jax.tree.map(np.asarray, out)


def assert_close(got, want, rtol, what=""):
  for name, g, w in zip(("o", "dq", "dk", "dv"), jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape, (what, name, g.shape, w.shape)
    err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30)
    assert err <= rtol, f"{what} {name}: relative error {err:.2e} > {rtol:.0e}"


def test_default_bias_and_direct_formula():
  """o = (tril * sigmoid(q.k / sqrt(D) - log S)) v with kv heads repeated, no normalisation."""
  B, T, H, K, D = 2, 33, 6, 3, 8
  q, k, v, _ = make_inputs(B, T, T, H, K, D)
  kr, vr = (jnp.repeat(x, H // K, axis=2) for x in (k, v))   # head h uses kv head h // (H/K)
  s = jnp.einsum("bthd,bshd->bhts", q, kr) / math.sqrt(D) - math.log(T)
  want = jnp.einsum("bhts,bshd->bthd", jax.nn.sigmoid(s) * np.tril(np.ones((T, T))), vr)
  got = jax.jit(lambda *a: sigmoid_attention(*a, impl="xla"))(q, k, v)
  np.testing.assert_allclose(got, want, atol=2e-6)
  got = jax.jit(lambda *a: sigmoid_attention(*a, bias=-1.0, causal=False, impl="xla"))(q, k, v)
  want = jnp.einsum("bhts,bshd->bthd", jax.nn.sigmoid(s + math.log(T) - 1.0), vr)
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_blockwise_matches_oracle_float64():
  spec = spec_of(PACKED)
  with jax.enable_x64(True):
    q, k, v, w = make_inputs(*PACKED[:6], dtype=jnp.float64)
    segs = make_segments(*PACKED[:3])
    got = fwd_vjp(lambda q, k, v, *s: blockwise(q, k, v, spec, *s, block_q=32, block_k=48))(
        (q, k, v), segs, w)
    assert_close(got, oracle(spec, (q, k, v), segs, w), 1e-12, "blockwise")
    assert np.all(np.asarray(got[0])[0, :3] == 0)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_pallas_matches_oracle(backend, dtype, rtol):
  spec = spec_of(PACKED)
  q, k, v, w = make_inputs(*PACKED[:6], dtype=dtype)
  segs = make_segments(*PACKED[:3])
  kernel = fwd_vjp(lambda *a: api.pallas(BACKENDS[backend], spec, BLOCKS[backend], True, *a))
  o, grads = kernel((q, k, v), segs, w)
  assert o.dtype == dtype and all(g.dtype == dtype for g in grads)
  assert_close((o, grads), oracle(spec, (q, k, v), segs, w), rtol, backend)
  assert np.all(np.asarray(o)[0, :3] == 0)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_check_grads_float64(backend):
  case = (1, 1, 20, 3, 1, 8, False, None)   # T = 1, odd heads, MQA, non-causal
  spec = spec_of(case)
  blocks = (8, 128) if backend == "tpu" else (16, 16)
  with jax.enable_x64(True):
    q, k, v, _ = make_inputs(*case[:6], dtype=jnp.float64)
    fn = lambda q, k, v: api.pallas(BACKENDS[backend], spec, blocks, True, q, k, v, None, None)
    check_grads(jax.jit(fn), (q, k, v), order=1, modes=("rev",))


@pytest.mark.parametrize("platform,marker", [("tpu", "tpu_custom_call"),
                                             ("cuda", "__gpu$xla.gpu.triton")])
def test_lowers_for_tpu_and_gpu(platform, marker):
  q = jax.ShapeDtypeStruct((2, 300, 6, 128), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((2, 300, 2, 128), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((2, 300), jnp.int32)
  fwd = lambda q, k, v, s: sigmoid_attention(q, k, v, segment_ids=s, window=128, impl="pallas")
  loss = lambda *a: fwd(*a).astype(jnp.float32).sum()
  for fn, n in [(fwd, 1), (jax.grad(loss, argnums=(0, 1, 2)), 3)]:
    text = jax.jit(fn).trace(q, k, k, seg).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == n


@pytest.mark.parametrize("kwargs,match", [
    (dict(bias=jnp.float32(1.0)), "bias must be a finite Python number"),
    (dict(bias=float("nan")), "bias"),
    (dict(window=3, causal=False), "requires causal"),
    (dict(scale="x"), "scale"),
])
def test_bad_input_raises(kwargs, match):
  q = jnp.zeros((1, 8, 2, 4))
  with pytest.raises(ValueError, match=match):
    sigmoid_attention(q, q, q, **kwargs)
