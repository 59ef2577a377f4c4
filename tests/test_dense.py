"""layers.dense: the 2-D matmul and the mixed-precision (bfloat16 operands, float32 accumulation) path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from layers.dense import Dense, mixed_matmul

BF16 = jnp.bfloat16


def rounded(a):
  """a rounded to bfloat16 and back: what the mixed matmul's operands hold."""
  return np.asarray(jnp.asarray(a).astype(BF16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("M,K,N", [(48, 16, 40), (8, 64, 8)])
def test_mixed_matmul_value_and_grads_equal_float64_on_rounded_operands(M, K, N):
  kx, kw, kd = jax.random.split(jax.random.PRNGKey(0), 3)
  x, w = jax.random.normal(kx, (M, K)), jax.random.normal(kw, (K, N))
  dy = jax.random.normal(kd, (M, N))
  y, vjp = jax.vjp(lambda x, w: mixed_matmul(x, w, BF16), x, w)
  jit_grads = jax.jit(lambda x, w, dy: jax.vjp(lambda x, w: mixed_matmul(x, w, BF16), x, w)[1](dy))
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, rounded(x) @ rounded(w), rtol=1e-5, atol=1e-5)
  for dx, dw in [vjp(dy), jit_grads(x, w, dy)]:
    assert dx.dtype == jnp.float32 and dw.dtype == jnp.float32   # the primal dtypes
    # The incoming gradient is rounded too; each product is exact in f32, the sums are f32.
    np.testing.assert_allclose(dx, rounded(dy) @ rounded(w).T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, rounded(x).T @ rounded(dy), rtol=1e-5, atol=1e-5)


def test_mixed_matmul_with_w_transposed():
  """x @ w.T for w of shape (N, K) (the tied output head), value and grads."""
  kx, kw, kd = jax.random.split(jax.random.PRNGKey(3), 3)
  x, w, dy = jax.random.normal(kx, (24, 16)), jax.random.normal(kw, (65, 16)), jax.random.normal(kd, (24, 65))
  f = jax.jit(lambda x, w, dy: jax.vjp(lambda x, w: mixed_matmul(x, w, BF16, w_is_NK=True), x, w))
  y, vjp = f(x, w, dy)
  dx, dw = vjp(dy)
  np.testing.assert_allclose(y, rounded(x) @ rounded(w).T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, rounded(dy) @ rounded(w), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, rounded(dy).T @ rounded(x), rtol=1e-5, atol=1e-5)
  assert dw.shape == (65, 16) and dw.dtype == jnp.float32


def test_mixed_matmul_keeps_a_bfloat16_input_gradient_in_bfloat16():
  x, w = jnp.ones((8, 4), BF16), jnp.ones((4, 2))
  dx, dw = jax.grad(lambda x, w: mixed_matmul(x, w, BF16).sum(), argnums=(0, 1))(x, w)
  assert dx.dtype == BF16 and dw.dtype == jnp.float32
  np.testing.assert_array_equal(dx.astype(jnp.float32), 2.0)
  np.testing.assert_array_equal(dw, 8.0)


def test_dense_matmul_dtype_bfloat16_tracks_float32():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 4, 8))
  f32 = Dense((3, 5), ("heads", "kv", "a", "b"), n_in=2)
  bf = Dense((3, 5), ("heads", "kv", "a", "b"), n_in=2, matmul_dtype=BF16)
  params = f32.init(jax.random.PRNGKey(2), x)
  loss = lambda m: lambda p: (m.apply(p, x) ** 2).sum()
  y32, y16 = f32.apply(params, x), bf.apply(params, x)
  assert y16.dtype == jnp.float32 and y16.shape == (2, 6, 3, 5)
  np.testing.assert_allclose(y16, y32, rtol=2e-2, atol=2e-2)
  g32, g16 = jax.grad(loss(f32))(params), jax.grad(loss(bf))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=5e-2, atol=5e-2), g16, g32)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))


def test_matmul_dtype_is_validated():
  ok = base.load("configs/quickstart.py", ["model.matmul_dtype=bfloat16"])
  base.validate(ok, 8)
  with pytest.raises(base.ConfigError, match="model.matmul_dtype='float16'"):
    base.validate(base.load("configs/quickstart.py", ["model.matmul_dtype=float16"]), 8)
  with pytest.raises(base.ConfigError, match="only implemented for model.name='decoder'"):
    base.validate(base.load("configs/quickstart.py", ["model.matmul_dtype=bfloat16",
                                                      "model.name=mamba"]), 8)
