"""W8A8 fake quantization (training/quantize.py, eval.py --quant w8a8) against numpy: the
rounding grid, a Dense with its input quantized, and eval.py's report on a run."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layers.dense import Dense
from training import evaluate, quantize
from test_export import corpus, make_run  # noqa: F401  (corpus: the fixture)


def np_quant(x):
  s = np.abs(x).max() / 127
  return np.clip(np.round(x / s), -127, 127) * s


def test_fake_quant_is_a_symmetric_8_bit_grid_over_max_abs():
  x = np.random.default_rng(0).standard_normal((4, 33)).astype(np.float32)
  q = np.asarray(quantize.fake_quant(jnp.asarray(x)))
  np.testing.assert_allclose(q, np_quant(x), rtol=1e-6, atol=1e-7)
  s = np.abs(x).max() / 127
  assert np.abs(q - x).max() <= s / 2 + 1e-6 and len(np.unique(q)) <= 255
  x_out = x.copy()
  x_out[0, 0] = 100.0                                # one outlier coarsens the whole tensor
  err = np.abs(np.asarray(quantize.fake_quant(jnp.asarray(x_out))) - x_out)[1:].mean()
  assert err > 10 * np.abs(q - x)[1:].mean()
  assert not np.asarray(quantize.fake_quant(jnp.zeros(3))).any()


def test_dense_inputs_are_quantized_inside_the_context_only():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8))
  d = Dense((5,), ("embed", "mlp"))
  p = nn.unbox(d.init(jax.random.PRNGKey(1), x)["params"])
  w, b = np.asarray(p["kernel"]), np.asarray(p["bias"])
  with quantize.activations():
    got = d.apply({"params": p}, x)
  np.testing.assert_allclose(got, np_quant(np.asarray(x)) @ w + b, atol=1e-5)
  np.testing.assert_allclose(d.apply({"params": p}, x), np.asarray(x) @ w + b, atol=1e-5)
  qp = quantize.quantize_weights({"a": {"kernel": p["kernel"], "bias": p["bias"]}})
  np.testing.assert_allclose(qp["a"]["kernel"], np_quant(w), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(qp["a"]["bias"], b)


def test_eval_reports_the_w8a8_loss_increase(tmp_path, corpus):
  make_run(tmp_path, corpus)
  out = json.loads(json.dumps(evaluate.report(tmp_path, batches=1, quant="w8a8")))
  q = out["w8a8"]
  assert q["eval_loss"] != out["eval_loss"]
  assert q["rel_loss_increase"] == pytest.approx(q["eval_loss"] / out["eval_loss"] - 1)
  assert abs(q["rel_loss_increase"]) < 0.2            # 8 bits: close to the float loss
