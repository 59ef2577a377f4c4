"""CRMSNorm against RMSNorm of the full zero-mean vector, and interop/norm_convert.py: a Pre-LN
decoder converted to Pre-RMSNorm and Pre-CRMSNorm computes the same logits."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modelzoo
from configs import base
from interop import norm_convert
from layers.norm import Norm

SMALL = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
         "model.max_len=32"]


def test_crmsnorm_is_rmsnorm_of_the_zero_mean_vector():
  x = np.random.default_rng(0).normal(size=(2, 5, 16))
  x -= x.mean(-1, keepdims=True)                          # zero-mean, width d = 16
  full = Norm("rmsnorm").apply({"params": {"scale": np.ones(16)}}, jnp.asarray(x, jnp.float32))
  rms = np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5)  # numpy: RMS over all d coordinates
  np.testing.assert_allclose(full, x / rms, rtol=1e-5, atol=1e-6)
  comp = Norm("crmsnorm").apply({"params": {"scale": np.ones(15)}},
                                jnp.asarray(x[..., :15], jnp.float32))
  np.testing.assert_allclose(comp, (x / rms)[..., :15], rtol=1e-5, atol=1e-6)


def model_and_params(*over, seed=0):
  cfg = base.load("configs/quickstart.py", SMALL + list(over))
  model = modelzoo.build(cfg.model)
  tok = jnp.asarray(np.random.default_rng(seed).integers(0, 256, (2, 24)), jnp.int32)
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), tok)["params"])
  rng = np.random.default_rng(seed + 1)   # every tensor random: norms' gamma, beta and biases too
  params = jax.tree.map(lambda p: (p + 0.3 * rng.normal(size=p.shape)).astype(np.float32), params)
  return cfg.model, params, tok


def logits(m, params, tok):
  return np.asarray(jax.jit(modelzoo.build(m).apply)({"params": params}, tok))


@pytest.mark.parametrize("over", [
    (),                                                            # GPT-2 style: tied, learned pos
    ("model.tie_embeddings=false", "model.scan_layers=false"),
    ("model.use_bias=false", "model.mlp=swiglu", "model.pos=rope", "model.n_kv_heads=2"),
])
def test_converted_models_give_the_same_logits(over):
  m, params, tok = model_and_params(*over)
  ref = logits(m, params, tok)
  tol = 1e-5 * np.abs(ref).max()                       # float32 rounding at the logits' scale
  m_rms, p_rms = norm_convert.convert(m, params, "rmsnorm")
  m_crms, p_crms = norm_convert.convert(m_rms, p_rms, "crmsnorm")
  m_direct, p_direct = norm_convert.convert(m, params, "crmsnorm")
  for mm, pp in ((m_rms, p_rms), (m_crms, p_crms), (m_direct, p_direct)):
    mm.check()
    assert np.abs(logits(mm, pp, tok) - ref).max() <= tol, mm.norm
  assert (m_rms.norm, m_crms.norm) == ("rmsnorm", "crmsnorm")
  assert p_crms["embed"]["embedding"].shape == (256, 31)     # the stream keeps d - 1 coordinates
  assert np.all(p_crms["norm_f"]["scale"] == 1) and "bias" not in p_crms["norm_f"]
  # the function changed hands, not the model's outputs: a converted model is no longer tied
  assert not m_crms.tie_embeddings and m_crms.head_bias


def test_a_trained_rmsnorm_model_that_is_not_centred_is_refused():
  m, params, _ = model_and_params("model.norm=rmsnorm")
  with pytest.raises(base.ConfigError, match="not zero-mean"):
    norm_convert.convert(m, params, "crmsnorm")


@pytest.mark.parametrize("kw,needle", [
    (dict(norm_placement="peri"), "norm_placement='peri'"),
    (dict(qk_norm=True), "qk_norm=True"),
    (dict(attn_gate=True), "attn_gate=True"),
    (dict(sigma_reparam=True), "sigma_reparam=True"),
    (dict(norm="rmsnorm"), None),                          # rmsnorm -> crmsnorm is a step
])
def test_convertible_names_what_stops_it(kw, needle):
  m = dataclasses.replace(base.load("configs/quickstart.py").model, **kw)
  if needle is None:
    norm_convert.check_convertible(m, "crmsnorm")
    with pytest.raises(base.ConfigError, match="one way only"):
      norm_convert.check_convertible(m, "rmsnorm")
    return
  with pytest.raises(base.ConfigError, match=needle):
    norm_convert.check_convertible(m, "rmsnorm")


def test_crmsnorm_config_refuses_what_reads_the_full_stream():
  with pytest.raises(base.ConfigError, match="model.qk_norm=True"):
    base.load("configs/quickstart.py", ["model.norm=crmsnorm", "model.qk_norm=true"]).model.check()
  with pytest.raises(base.ConfigError, match="head_bias needs an untied head"):
    base.load("configs/quickstart.py", ["model.head_bias=true"]).model.check()
  m = base.load("configs/quickstart.py", ["model.norm=crmsnorm"]).model
  m.check()
  assert m.d_stream == m.d_model - 1
