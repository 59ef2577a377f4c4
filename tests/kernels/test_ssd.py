"""Mamba-2 SSD: chunked jnp path and Pallas kernels (interpreted) vs the token-by-token oracle.

The oracle always runs in float64. Compile time dominates on CPU (an interpreted Pallas
fwd+bwd takes seconds to compile, milliseconds to run), so each compiled function is
reused for several data sets: "no initial state" is the same program with h0 = 0.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels.ssd import api, pallas_gpu, pallas_tpu
from kernels.ssd.api import ssd
from kernels.ssd.reference import ssd_chunked, ssd_naive

KERNELS = {"tpu": (pallas_tpu.ssd_fwd, pallas_tpu.ssd_bwd),
           "gpu": (pallas_gpu.ssd_fwd, pallas_gpu.ssd_bwd)}
NAMES = ("x", "dt", "A", "B", "C", "h0")

# (batch, T, heads, P, groups, N, chunk)
RAGGED_GROUPS = (2, 37, 6, 8, 3, 5, 8)     # T not a multiple of the chunk, 2 heads per group
ONE_TOKEN = (1, 1, 3, 4, 1, 6, 8)          # T = 1, odd head count, a single group
HEAD_GROUPS = (1, 48, 5, 4, 5, 3, 16)      # T a multiple of the chunk, G = H (odd)


def make_inputs(Bsz, T, H, P, G, N, dtype=jnp.float32, seed=0):
  """numpy RNG: building inputs compiles nothing."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape)
  x = normal(Bsz, T, H, P)
  dt = np.logaddexp(0.0, normal(Bsz, T, H) - 1.0)            # softplus: positive
  A = -np.exp(0.5 * normal(H))                                # negative
  B = normal(Bsz, T, G, N) / np.sqrt(N)
  C = normal(Bsz, T, G, N) / np.sqrt(N)
  h0 = 0.5 * normal(Bsz, H, P, N)
  return tuple(jnp.asarray(a, dtype) for a in (x, dt, A, B, C, h0))


def cotangents(args, seed=1):
  rng = np.random.default_rng(seed)
  x, *_, h0 = args
  return (jnp.asarray(rng.standard_normal(x.shape), x.dtype),
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
  return fwd_vjp(ssd_naive)


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
    # Floor of 1: some gradients are exactly 0 (dA at T=1 with a zero state).
    err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1.0)
    assert err <= rtol, f"{what} {name}: relative error {err:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("case", [RAGGED_GROUPS, ONE_TOKEN, HEAD_GROUPS])
def test_chunked_matches_naive_float64(case):
  *shape, chunk = case
  with jax.enable_x64(True):
    args = make_inputs(*shape, dtype=jnp.float64)
    cts = cotangents(args)
    chunked = fwd_vjp(lambda *a: ssd_chunked(*a, chunk_size=chunk))
    for data in (args, zero_state(args)):
      assert_close(chunked(data, cts), oracle(data, cts), 1e-12, "chunked")


def test_xla_backward_float32_and_bfloat16():
  """The public impl="xla" path (the chunked jnp forward and its hand-written backward) against
  jax.vjp of the per-token scan in float64: several chunks plus a ragged tail, 2 heads per group,
  an initial state, random cotangents on y and the final state. bf16 x/B/C: gradients come back
  in each input's dtype. 2e-5: dA sums 600 per-token terms in f32 (autodiff of the same chunked
  forward lands at 5e-6)."""
  args = make_inputs(2, 150, 4, 16, 2, 8, seed=3)
  cts = cotangents(args, seed=4)
  xla = fwd_vjp(lambda x, dt, A, B, C, h0: ssd(x, dt, A, B, C, initial_state_BHPN=h0,
                                               chunk_size=64, impl="xla"))
  for data in (args, zero_state(args)):
    assert_close(xla(data, cts), oracle(data, cts), 2e-5, "xla f32")
  args = tuple(a.astype(jnp.bfloat16) if n in "xBC" else a for n, a in zip(NAMES, args))
  cts = cotangents(args, seed=4)
  (y, s), grads = xla(args, cts)
  assert y.dtype == jnp.bfloat16 and s.dtype == jnp.float32
  assert [g.dtype for g in grads] == [a.dtype for a in args]
  assert_close(((y, s), grads), oracle(args, cts), 3e-2, "xla bf16")


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize("case", [RAGGED_GROUPS, ONE_TOKEN])
def test_pallas_matches_naive_float32(backend, case):
  *shape, chunk = case
  chunk = max(chunk, 16) if backend == "gpu" else chunk   # Triton: power of two >= 16
  args = make_inputs(*shape)
  cts = cotangents(args)
  kernel = fwd_vjp(lambda *a: api._ssd_pallas(KERNELS[backend], chunk, True, *a))
  for data in (args, zero_state(args)):
    assert_close(kernel(data, cts), oracle(data, cts), 1e-5, backend)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_pallas_bfloat16(backend):
  """bf16 x/B/C (dt, A and the state stay f32): matmul operands are bf16, so looser."""
  args = make_inputs(*RAGGED_GROUPS[:-1])
  args = tuple(a.astype(jnp.bfloat16) if n in "xBC" else a for n, a in zip(NAMES, args))
  cts = cotangents(args)
  (y, s), grads = fwd_vjp(lambda *a: api._ssd_pallas(KERNELS[backend], 16, True, *a))(args, cts)
  assert y.dtype == jnp.bfloat16 and s.dtype == jnp.float32
  assert [g.dtype for g in grads] == [a.dtype for a in args]
  assert_close(((y, s), grads), oracle(args, cts), 3e-2, backend)


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_check_grads_float64(backend):
  with jax.enable_x64(True):
    args = make_inputs(1, 20, 2, 4, 1, 3, dtype=jnp.float64)
    f = jax.jit(lambda *a: api._ssd_pallas(KERNELS[backend], 16, True, *a))
    check_grads(f, args, order=1, modes=("rev",))


@pytest.mark.parametrize("impl", ["xla", "interpret"])
def test_state_split_equals_one_run(impl):
  x, dt, A, B, C, h0 = make_inputs(2, 24, 4, 8, 2, 5)
  run = jax.jit(lambda x, dt, B, C, h: ssd(x, dt, A, B, C, initial_state_BHPN=h, chunk_size=8,
                                           impl=impl))
  y, s = run(x, dt, B, C, h0)
  half = lambda a: (a[:, :12], a[:, 12:])           # the split falls inside a chunk
  (x1, x2), (dt1, dt2), (B1, B2), (C1, C2) = map(half, (x, dt, B, C))
  y1, s1 = run(x1, dt1, B1, C1, h0)
  y2, s2 = run(x2, dt2, B2, C2, s1)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s2, s, rtol=1e-5, atol=1e-5)


def test_auto_is_xla_on_cpu_and_none_is_zero_state():
  x, dt, A, B, C, h0 = make_inputs(1, 5, 2, 4, 1, 3)
  run = lambda impl, h: jax.jit(lambda *a: ssd(*a, initial_state_BHPN=h, chunk_size=16,
                                               impl=impl))(x, dt, A, B, C)
  jax.tree.map(np.testing.assert_array_equal, run("auto", None), run("xla", None))
  jax.tree.map(np.testing.assert_array_equal, run("xla", None), run("xla", jnp.zeros_like(h0)))


@pytest.mark.parametrize("platform,target", [("tpu", "tpu_custom_call"),
                                             ("cuda", "__gpu$xla.gpu.triton")])
def test_lowers_for_accelerators(platform, target):
  """Forward and gradient through the public API with impl='pallas' produce the kernels'
  custom calls (one forward, plus one backward under grad) for each platform."""
  Bsz, T, H, P, G, N = 2, 200, 4, 64, 2, 64
  sds = jax.ShapeDtypeStruct
  args = (sds((Bsz, T, H, P), jnp.bfloat16), sds((Bsz, T, H), jnp.float32),
          sds((H,), jnp.float32), sds((Bsz, T, G, N), jnp.bfloat16),
          sds((Bsz, T, G, N), jnp.bfloat16))
  f = lambda *a: ssd(*a, chunk_size=64, impl="pallas")

  def loss(*a):
    y, s = f(*a)
    return jnp.sum(y.astype(jnp.float32)) + jnp.sum(s)

  for fn, calls in ((f, 1), (jax.grad(loss, argnums=range(5)), 2)):
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(target) == calls, (platform, calls)


def test_bad_input_raises():
  x, dt, A, B, C, h0 = make_inputs(1, 10, 4, 4, 2, 3)
  with pytest.raises(ValueError, match="A_H"):
    ssd(x, dt, A[:3], B, C)
  with pytest.raises(ValueError, match="G=3"):
    ssd(x, dt, A, jnp.zeros((1, 10, 3, 3)), jnp.zeros((1, 10, 3, 3)))
  with pytest.raises(ValueError, match="chunk_size=12"):
    ssd(x, dt, A, B, C, chunk_size=12)
  with pytest.raises(ValueError, match="24"):
    ssd(x, dt, A, B, C, chunk_size=24, impl="pallas")
  with pytest.raises(ValueError, match="initial_state"):
    ssd(x, dt, A, B, C, initial_state_BHPN=h0[:, :2])
  with pytest.raises(ValueError, match="impl"):
    ssd(x, dt, A, B, C, impl="cuda")
