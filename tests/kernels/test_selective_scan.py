"""Mamba-1 selective scan: chunked jnp path and Pallas kernels (interpreted) vs the
token-by-token oracle.

The oracle always runs in float64. Compile time dominates on CPU, so each compiled function
is reused for several data sets ("no initial state" is the same program with h0 = 0).
The chunked path has a hand-written backward, so its gradient test is a real check of that
math (and of the math the kernels share with it).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels.selective_scan import api, pallas_gpu, pallas_tpu
from kernels.selective_scan.api import selective_scan
from kernels.selective_scan.reference import selective_scan_chunked, selective_scan_naive

KERNELS = {"tpu": (pallas_tpu.scan_fwd, pallas_tpu.scan_bwd),
           "gpu": (pallas_gpu.scan_fwd, pallas_gpu.scan_bwd)}
NAMES = ("u", "delta", "A", "B", "C", "h0")

# (batch, T, D, N, chunk)
RAGGED = (2, 37, 6, 5, 8)        # T not a multiple of the chunk; D and N not powers of two
ONE_TOKEN = (1, 1, 3, 4, 8)      # T = 1
WIDE = (1, 32, 300, 3, 16)       # T a multiple of the chunk; D > one channel block (padding)


def make_inputs(Bsz, T, D, N, dtype=jnp.float32, seed=0):
  """numpy RNG: building inputs compiles nothing."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape)
  u = normal(Bsz, T, D)
  delta = np.logaddexp(0.0, normal(Bsz, T, D) - 1.0)        # softplus: positive
  A = -np.exp(0.5 * normal(D, N))                            # negative
  B = normal(Bsz, T, N)
  C = normal(Bsz, T, N)
  h0 = 0.5 * normal(Bsz, D, N)
  return tuple(jnp.asarray(a, dtype) for a in (u, delta, A, B, C, h0))


def cotangents(args, seed=1):
  rng = np.random.default_rng(seed)
  u, *_, h0 = args
  return (jnp.asarray(rng.standard_normal(u.shape), u.dtype),
          jnp.asarray(rng.standard_normal(h0.shape), h0.dtype))


def zero_state(args):
  return args[:5] + (jnp.zeros_like(args[5]),)


def fwd_vjp(fn):
  """jit(args, cts) -> ((y, final_state), grads w.r.t. all six inputs)."""
  def f(args, cts):
    out, vjp = jax.vjp(fn, *args)
    return out, vjp(cts)
  return jax.jit(f)


@functools.cache
def _naive_fwd_vjp():
  return fwd_vjp(selective_scan_naive)


def oracle(args, cts):
  """float64 naive scan on the same (already rounded) inputs."""
  with jax.enable_x64(True):
    f64 = lambda t: tuple(jnp.asarray(np.asarray(a, np.float64)) for a in t)
    out, grads = _naive_fwd_vjp()(f64(args), f64(cts))
    return jax.tree.map(np.asarray, (out, grads))


def assert_close(got, want, rtol, what=""):
  """Max error relative to the reference's largest magnitude (at least 1), per array."""
  for name, g, w in zip(("y", "final_state") + NAMES, jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape, (what, name, g.shape, w.shape)
    err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1.0)
    assert err <= rtol, f"{what} {name}: relative error {err:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("case", [RAGGED, ONE_TOKEN, WIDE])
def test_chunked_matches_naive_float64(case):
  *shape, chunk = case
  with jax.enable_x64(True):
    args = make_inputs(*shape, dtype=jnp.float64)
    cts = cotangents(args)
    chunked = fwd_vjp(lambda *a: selective_scan_chunked(*a, chunk_size=chunk))
    for data in (args, zero_state(args)):
      assert_close(chunked(data, cts), oracle(data, cts), 1e-12, "chunked")


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize("case", [RAGGED, WIDE])
def test_pallas_matches_naive_float32(backend, case):
  *shape, chunk = case
  args = make_inputs(*shape)
  cts = cotangents(args)
  kernel = fwd_vjp(lambda *a: api._scan_pallas(KERNELS[backend], chunk, True, *a))
  for data in (args, zero_state(args)):
    assert_close(kernel(data, cts), oracle(data, cts), 1e-5, backend)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_pallas_bfloat16_one_token(backend):
  """T = 1 with bf16 u/B/C (delta, A and the state stay f32): looser tolerance."""
  args = make_inputs(*ONE_TOKEN[:-1])
  args = tuple(a.astype(jnp.bfloat16) if n in ("u", "B", "C") else a
               for n, a in zip(NAMES, args))
  cts = cotangents(args)
  kernel = fwd_vjp(lambda *a: api._scan_pallas(KERNELS[backend], 8, True, *a))
  (y, s), grads = kernel(args, cts)
  assert y.dtype == jnp.bfloat16 and s.dtype == jnp.float32
  assert [g.dtype for g in grads] == [a.dtype for a in args]
  assert_close(((y, s), grads), oracle(args, cts), 2e-2, backend)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_check_grads_float64(backend):
  with jax.enable_x64(True):
    args = make_inputs(1, 12, 3, 2, dtype=jnp.float64)
    f = jax.jit(lambda *a: api._scan_pallas(KERNELS[backend], 8, True, *a))
    check_grads(f, args, order=1, modes=("rev",))


@pytest.mark.parametrize("impl", ["xla", "interpret"])
def test_state_split_equals_one_run(impl):
  u, delta, A, B, C, h0 = make_inputs(2, 24, 5, 3)
  run = jax.jit(lambda u, d, B, C, h: selective_scan(u, d, A, B, C, initial_state_BDN=h,
                                                     chunk_size=8, impl=impl))
  y, s = run(u, delta, B, C, h0)
  half = lambda a: (a[:, :12], a[:, 12:])           # the split falls inside a chunk
  (u1, u2), (d1, d2), (B1, B2), (C1, C2) = map(half, (u, delta, B, C))
  y1, s1 = run(u1, d1, B1, C1, h0)
  y2, s2 = run(u2, d2, B2, C2, s1)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s2, s, rtol=1e-5, atol=1e-5)


def test_auto_is_xla_on_cpu_and_none_is_zero_state():
  u, delta, A, B, C, h0 = make_inputs(1, 5, 3, 2)
  run = lambda impl, h: jax.jit(lambda *a: selective_scan(
      *a, initial_state_BDN=h, chunk_size=8, impl=impl))(u, delta, A, B, C)
  jax.tree.map(np.testing.assert_array_equal, run("auto", None), run("xla", None))
  jax.tree.map(np.testing.assert_array_equal, run("xla", None), run("xla", jnp.zeros_like(h0)))


@pytest.mark.parametrize("platform,target", [("tpu", "tpu_custom_call"),
                                             ("cuda", "__gpu$xla.gpu.triton")])
def test_lowers_for_accelerators(platform, target):
  """Forward and gradient through the public API with impl='pallas' produce the kernels'
  custom calls (one forward, plus one backward under grad) for each platform."""
  Bsz, T, D, N = 2, 200, 300, 16
  sds = jax.ShapeDtypeStruct
  args = (sds((Bsz, T, D), jnp.bfloat16), sds((Bsz, T, D), jnp.float32),
          sds((D, N), jnp.float32), sds((Bsz, T, N), jnp.bfloat16),
          sds((Bsz, T, N), jnp.bfloat16))
  f = lambda *a: selective_scan(*a, chunk_size=64, impl="pallas")

  def loss(*a):
    y, s = f(*a)
    return jnp.sum(y.astype(jnp.float32)) + jnp.sum(s)

  for fn, calls in ((f, 1), (jax.grad(loss, argnums=range(5)), 2)):
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(target) == calls, (platform, calls)


def test_bad_input_raises():
  u, delta, A, B, C, h0 = make_inputs(1, 10, 4, 3)
  with pytest.raises(ValueError, match="delta_BTD"):
    selective_scan(u, delta[:, :5], A, B, C)
  with pytest.raises(ValueError, match="A_DN"):
    selective_scan(u, delta, A[:3], B, C)
  with pytest.raises(ValueError, match="C_BTN"):
    selective_scan(u, delta, A, B, C[..., :2])
  with pytest.raises(ValueError, match="chunk_size"):
    selective_scan(u, delta, A, B, C, chunk_size=12)
  with pytest.raises(ValueError, match="initial_state"):
    selective_scan(u, delta, A, B, C, initial_state_BDN=h0[:, :2])
  with pytest.raises(ValueError, match="impl"):
    selective_scan(u, delta, A, B, C, impl="tpu")
