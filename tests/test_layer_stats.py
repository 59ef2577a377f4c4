"""Wave 2a's decoder options and their statistics, each against an independent formula: the
norm placements (peri = x + Norm(f(Norm(x)))), ReLU with Top-k, PolyReLU and PolyNorm, and the
per-layer statistics the train step logs (hidden-state RMS, fraction of non-zero activations),
scanned and unrolled, with and without gradient accumulation."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modelzoo
from configs import base
from layers.mlp import MLP
from training import step as step_lib
from tests.test_step import run

NAMES = [n for names in step_lib.STATS.values() for n in names]
TOK = (np.arange(2 * 12).reshape(2, 12) * 7 % 61).astype(np.int32)


def tiny(**kw):
  return base.gpt2_style(vocab_size=61, d_model=16, n_layers=3, n_heads=2, d_ff=32, max_len=12,
                         **kw)


def init(cfg):
  return nn.unbox(modelzoo.build(cfg).init(jax.random.PRNGKey(0), TOK)["params"])


def np_norm(x, p):   # LayerNorm with the block's scale and bias, in numpy
  x = np.asarray(x, np.float64)
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])


@pytest.mark.parametrize("placement", ["pre", "post", "peri"])
def test_norm_placements_and_hidden_rms_against_numpy(placement):
  """Each block's output from its sublayers' captured outputs, composed in numpy by the
  placement's formula; the sown hidden_rms equals numpy's RMS of that output, layer by layer."""
  cfg = tiny(norm_placement=placement, scan_layers=False)
  model, params = modelzoo.build(cfg), init(cfg)
  _, v = model.apply({"params": params}, TOK, capture_intermediates=True,
                     mutable=["intermediates", "stats"])
  inter = v["intermediates"]
  x, rms = None, []     # layer 0's input (embedding + positions) is not captured: from layer 1 on
  for i in range(cfg.n_layers):
    lay, p = inter[f"layers_{i}"], params[f"layers_{i}"]
    attn, mlp = (np.asarray(lay[k]["__call__"][0], np.float64) for k in ("attn", "mlp"))
    out = np.asarray(lay["__call__"][0][0], np.float64)
    if i:
      x = prev
    if x is not None:
      if placement == "pre":
        h = x + attn
        want = h + mlp
      elif placement == "peri":
        h = x + np_norm(attn, p["norm3"])
        want = h + np_norm(mlp, p["norm4"])
      else:
        h = np_norm(x + attn, p["norm1"])
        want = np_norm(h + mlp, p["norm2"])
      np.testing.assert_allclose(out, want, atol=2e-5)
    prev = out
    rms.append(np.sqrt(np.mean(out ** 2)))
  np.testing.assert_allclose(step_lib.per_layer(v["stats"], "hidden_rms"), rms, rtol=1e-5)
  assert model.final_norm() == (placement != "post")


def test_scanned_and_unrolled_stacks_sow_the_same_statistics():
  cfg = tiny(mlp="relu")
  p_scan = init(cfg)
  flat = dataclasses.replace(cfg, scan_layers=False)
  p_flat = {k: v for k, v in p_scan.items() if k != "layers"}
  for i in range(cfg.n_layers):
    p_flat[f"layers_{i}"] = jax.tree.map(lambda a: a[i], p_scan["layers"])
  got = {}
  for c, p in ((cfg, p_scan), (flat, p_flat)):
    _, v = modelzoo.build(c).apply({"params": p}, TOK, mutable=["stats"])
    got[c.scan_layers] = [np.asarray(step_lib.per_layer(v["stats"], n)) for n in NAMES]
  for n, a, b in zip(NAMES, got[True], got[False]):
    assert a.shape == ((cfg.n_layers, cfg.n_heads) if n in step_lib.PER_HEAD else (cfg.n_layers,))
    np.testing.assert_allclose(a, b, rtol=1e-5)


X = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8))


def mlp_hidden(kind, topk=0):
  """The MLP's activations (wi's output through the activation) and the sown non-zero fraction."""
  m = MLP(d_ff=24, kind=kind, topk=topk)
  p = nn.unbox(m.init(jax.random.PRNGKey(2), X)["params"])
  _, v = m.apply({"params": p}, X, mutable=["stats"])
  u = np.asarray(X, np.float64) @ np.asarray(p["wi"]["kernel"], np.float64) + np.asarray(p["wi"]["bias"])
  return p, u, float(v["stats"]["act_nonzero"][0])


def test_relu_top_k_keeps_each_tokens_k_largest_and_sparsity_is_counted():
  _, u, frac = mlp_hidden("relu")
  np.testing.assert_allclose(frac, np.mean(u > 0), rtol=1e-6)
  p, u, frac = mlp_hidden("relu", topk=3)
  h = np.maximum(u, 0)
  kth = np.sort(h, -1)[..., -3][..., None]
  want = np.where(h >= kth, h, 0.0)
  assert ((want != 0).sum(-1) <= 3).all()
  np.testing.assert_allclose(frac, np.mean(want != 0), rtol=1e-6)
  m = MLP(d_ff=24, kind="relu", topk=3)
  got = m.apply({"params": p}, X)
  np.testing.assert_allclose(got, want @ np.asarray(p["wo"]["kernel"]) + np.asarray(p["wo"]["bias"]),
                             atol=1e-5)


@pytest.mark.parametrize("kind", ["polyrelu", "polynorm"])
def test_polycom_activations_against_their_formulas(kind):
  """PolyReLU: sum_i a_i relu(u)^i + b; PolyNorm: sum_i a_i u^i / rms(u^i) + b (RMS over the
  hidden units), i = 1..3, a_i = 1/3 and b = 0 at init; checked at other coefficients too."""
  m = MLP(d_ff=24, kind=kind)
  p = nn.unbox(m.init(jax.random.PRNGKey(2), X)["params"])
  np.testing.assert_allclose(p["poly_a"], [1 / 3] * 3)
  assert float(p["poly_b"]) == 0.0
  p = dict(p, poly_a=jnp.array([0.5, -0.2, 0.1]), poly_b=jnp.array(0.3))
  u = np.asarray(X, np.float64) @ np.asarray(p["wi"]["kernel"], np.float64) + np.asarray(p["wi"]["bias"])
  base_u = np.maximum(u, 0) if kind == "polyrelu" else u
  h = 0.3
  for i, a in enumerate([0.5, -0.2, 0.1], start=1):
    t = base_u ** i
    if kind == "polynorm":
      t = t / np.sqrt(np.mean(t * t, -1, keepdims=True) + 1e-6)
    h = h + a * t
  want = h @ np.asarray(p["wo"]["kernel"]) + np.asarray(p["wo"]["bias"])
  np.testing.assert_allclose(m.apply({"params": p}, X), want, atol=1e-4)


def test_bad_options_are_refused_before_tracing():
  with pytest.raises(base.ConfigError, match="mlp_topk=4 needs model.mlp=relu"):
    modelzoo.check(tiny(mlp_topk=4))
  with pytest.raises(base.ConfigError, match="mlp_topk=64 is more than model.d_ff=32"):
    modelzoo.check(tiny(mlp="relu", mlp_topk=64))
  with pytest.raises(base.ConfigError, match="norm_placement"):
    base.validate(base.load("configs/quickstart.py", ["model.norm_placement=middle"]), 1)


def test_a_run_saved_with_hybrid_norm_loads_as_peri():
  saved = base.to_dict(base.load("configs/sigmoid_tiny.py"))
  assert saved["model"]["norm_placement"] == "peri"
  old = dict(saved["model"], norm_placement="pre", hybrid_norm=True)
  assert base.from_dict({**saved, "model": old}) == base.load("configs/sigmoid_tiny.py")


def test_train_step_logs_per_layer_statistics_only_when_asked():
  off, _ = run(["model.mlp=relu"], steps=1)
  assert not any("/" in k for k in off[0])
  flags = ["model.mlp=relu"] + [f"train.log_{f}=true" for f in step_lib.STATS]
  on, p_on = run(flags, steps=1)
  for n in NAMES:
    keys = [f"{n}/{i}/{h}" for i in range(2) for h in range(4)] if n in step_lib.PER_HEAD else [
        f"{n}/{i}" for i in range(2)]
    assert all(0 < on[0][k] for k in keys) and f"{n}/2" not in on[0]
  assert all(0 < on[0][f"act_nonzero/{i}"] < 1 for i in range(2))
  assert on[0]["loss"] == off[0]["loss"]          # the statistics change nothing else
  acc, _ = run(flags + ["train.grad_accum=4"], steps=1)
  for k in on[0]:                                  # means over micro-batches of the same batch
    if "maxabs" in k:                              # a mean of the micro-batches' maxima
      assert 0.5 * on[0][k] < acc[0][k] <= on[0][k] * (1 + 1e-5)
    elif "/" in k:
      np.testing.assert_allclose(acc[0][k], on[0][k], rtol=0.05)


# ---------------------------------------------------------------------------------------------
# Attention: clipped softmax, gated attention, the entropy statistic; kurtosis.

def np_attention(p, x, H, clip=None, gate=False):
  """Causal multi-head softmax attention from the module's parameters, in float64 numpy; returns
  (output, the weights applied [B, H, T, T], the softmax rows)."""
  x = np.asarray(x, np.float64)
  f = lambda n: np.einsum("btd,dhc->bthc", x, np.asarray(p[n]["kernel"], np.float64)) + np.asarray(
      p[n]["bias"])
  q, k, v = f("query"), f("key"), f("value")
  T, C = x.shape[1], q.shape[-1]
  s = np.einsum("bthc,bshc->bhts", q, k) / np.sqrt(C)
  s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
  soft = np.exp(s - s.max(-1, keepdims=True))
  soft /= soft.sum(-1, keepdims=True)
  w = soft if clip is None else np.clip((clip[0] - clip[1]) * soft + clip[1], 0, 1)
  o = np.einsum("bhts,bshc->bthc", w, v)
  if gate:
    xs = x.reshape(*x.shape[:2], H, -1)
    g = np.einsum("bthc,hc->bth", xs, np.asarray(p["gate"], np.float64)) + np.asarray(p["gate_bias"])
    o = o / (1 + np.exp(-g))[..., None]
  out = np.einsum("bthc,hcd->btd", o, np.asarray(p["out"]["kernel"], np.float64)) + np.asarray(
      p["out"]["bias"])
  return out, w, soft


@pytest.mark.parametrize("clip, gate", [(None, False), ((1.0, -0.1), False), (None, True),
                                        ((1.02, -0.05), True)])
def test_clipped_and_gated_attention_and_entropy_against_numpy(clip, gate):
  from layers.attention import Attention
  H, x = 4, jax.random.normal(jax.random.PRNGKey(4), (2, 9, 16))
  att = Attention(n_heads=H, n_kv_heads=H, d_head=4, clip=clip, gate=gate, impl="xla")
  p = nn.unbox(att.init(jax.random.PRNGKey(5), x)["params"])
  p = dict(p, **{n: dict(p[n], kernel=p[n]["kernel"] * 15.0) for n in ("query", "key")})  # peaked
  if gate:   # a gate that differs per head and token
    p = dict(p, gate=p["gate"] * 40.0, gate_bias=jnp.arange(H, dtype=jnp.float32) - 1.5)
  got, v = att.apply({"params": p}, x, mutable=["stats"])
  want, w, soft = np_attention(p, x, H, clip, gate)
  np.testing.assert_allclose(got, want, atol=2e-5)
  if clip is not None:
    assert (w == 0).sum() > (soft == 0).sum()       # the clip zeroes some visible keys
  wn = w / w.sum(-1, keepdims=True)
  ent = -np.sum(np.where(wn > 0, wn * np.log(np.where(wn > 0, wn, 1)), 0), -1).mean((0, 2))
  np.testing.assert_allclose(v["stats"]["attn_entropy"][0], ent, rtol=1e-5)
  np.testing.assert_allclose(att.apply({"params": p}, x), got, atol=1e-6)   # stats off: same


def test_kurtosis_and_max_abs_against_numpy():
  from layers import stats
  x = np.random.default_rng(0).standard_t(3, (3, 5, 64)).astype(np.float32)
  x[0, 0, 7] = 50.0                                   # an outlier dimension
  d = x.astype(np.float64) - x.mean(-1, keepdims=True)
  want = np.mean(np.mean(d ** 4, -1) / np.mean(d ** 2, -1) ** 2)
  np.testing.assert_allclose(stats.kurtosis(jnp.asarray(x)), want, rtol=1e-4)
  assert float(stats.max_abs(jnp.asarray(x))) == 50.0
  g = np.random.default_rng(1).standard_normal((4, 256, 512)).astype(np.float32)
  assert abs(float(stats.kurtosis(jnp.asarray(g))) - 3.0) < 0.05   # a Gaussian's


def test_clip_and_gate_settings_are_checked():
  with pytest.raises(base.ConfigError, match="gamma <= 0 and zeta >= 1"):
    modelzoo.check(tiny(attn_clip_gamma=0.1))
  with pytest.raises(base.ConfigError, match="softmax attention"):
    modelzoo.check(tiny(attn_gate=True, attention="sigmoid"))
