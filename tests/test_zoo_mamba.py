"""Mamba, Mamba-2 and the Mamba-2 hybrid: paper-scale parameter counts (analytic formula and the
papers' figures), the layer-pattern grammar, scan == unrolled for periodic patterns, recurrent
decoding (conv + SSM state, one token at a time, and chunked prefills from a cached state) ==
the chunked forward pass, generate(cache) == generate(no cache), and a few train.py steps lowering
the loss followed by eval.py sampling."""
import dataclasses
import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import entry
import modelzoo
from configs.base import ConfigError, load, model_config, validate
from interop.generate import generate
from layers.ssm import Mamba
from modelzoo.mamba2.model import unit_of


def mamba_params(c) -> int:
  """Embedding (+ untied head) + L × (RMSNorm + in_proj + conv + x_proj + dt_proj + A_log + D +
  out_proj) + final norm."""
  D, E, N, K, V = c.d_model, c.expand * c.d_model, c.d_state, c.d_conv, c.vocab_size
  R = c.dt_rank or math.ceil(D / 16)   # (independent of MambaConfig.rank)
  b = 1 if c.use_bias else 0
  # Δ, B, C: x_proj + dt_proj (kernel, bias); the LTI ablation: dt_bias [E], B and C [E, N]
  dbc = E * (R + 2 * N) + R * E + E if c.ssm_selective else E + 2 * E * N
  layer = D + 2 * D * E + b * 2 * E + K * E + E + dbc + E * N + E + E * D + b * D
  return V * D * (1 if c.tie_embeddings else 2) + c.n_layers * layer + D


def mamba2_params(c) -> int:
  """Per symbol of the pattern, each with its RMSNorm: M = in_proj (z, x, B, C, dt) + conv over
  x, B, C (+ bias) + dt_bias, A_log, D per head + gated RMSNorm + out_proj; * = GQA attention;
  - = MLP."""
  D, E, N, K, G = c.d_model, c.expand * c.d_model, c.d_state, c.d_conv, c.ssm_groups
  H, b = E // c.ssm_head_dim, (1 if c.use_bias else 0)
  conv_ch = E + 2 * G * N
  m = D * (2 * E + 2 * G * N + H) + b * (2 * E + 2 * G * N + H) + (K + 1) * conv_ch + 3 * H \
      + E + E * D + b * D
  Ha, Ka = c.n_heads, c.n_kv_heads or c.n_heads
  dh = c.d_head or D // Ha
  att = D * dh * (2 * Ha + 2 * Ka) + b * (Ha * dh + 2 * Ka * dh + D)
  mlp = (3 if c.mlp == "swiglu" else 2) * D * c.d_ff + b * (c.d_ff * (2 if c.mlp == "swiglu" else 1) + D)
  p = c.layer_pattern or "M" * c.n_layers
  return (c.vocab_size * D * (1 if c.tie_embeddings else 2) + D + len(p) * D
          + p.count("M") * m + p.count("*") * att + p.count("-") * mlp)


def formula(c) -> int:
  return mamba_params(c) if c.name == "mamba" else mamba2_params(c)


def abstract_params(c, T=8):
  return jax.eval_shape(lambda: modelzoo.build(c).init(jax.random.PRNGKey(0),
                                                       jnp.zeros((1, T), jnp.int32)))["params"]


def count(c) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(abstract_params(c))))


# The papers' figures: Mamba Table/README sizes; Mamba-2-Hybrid 8.66B and Mamba-2 8.24B (Waleffe
# et al. 2024, Table 1).
PAPER = [("mamba_130m", 130e6), ("mamba_370m", 370e6), ("mamba_790m", 790e6),
         ("mamba_1_4b", 1.4e9), ("mamba_2_8b", 2.8e9), ("mamba2_hybrid_8b", 8.66e9),
         ("mamba2_8b", 8.24e9)]


@pytest.mark.parametrize("name, paper", PAPER)
def test_paper_scale_configs_build_at_the_papers_size(name, paper):
  cfg = load(f"configs/{name}.py", ["model.attn_impl=xla"])
  validate(cfg, jax.device_count())
  modelzoo.check(cfg.model)
  n = count(cfg.model)
  assert n == formula(cfg.model)
  assert abs(n / paper - 1) < 0.02, (name, n, paper)


def tiny(name, **kw):
  base = dict(vocab_size=61, d_model=32, n_layers=2, pos="none", norm="rmsnorm", norm_bias=False,
              use_bias=False, d_state=8, ssm_chunk=16, attn_impl="xla", max_len=64)
  if name == "mamba2":
    base.update(n_layers=6, layer_pattern="M*-M*-", n_heads=4, n_kv_heads=2, d_ff=64,
                d_state=16, ssm_head_dim=16, ssm_groups=2)
  return model_config(name, **{**base, **kw})


MAMBA, HYBRID = tiny("mamba"), tiny("mamba2")
VARIANTS = [MAMBA, HYBRID,
            tiny("mamba", use_bias=True, tie_embeddings=False, dt_rank=3, expand=3),
            tiny("mamba", ssm_selective=False, use_bias=True, expand=3),
            tiny("mamba2", layer_pattern="", n_layers=3, use_bias=True, mlp="swiglu"),
            tiny("mamba2", layer_pattern="M-M*--", scan_layers=False, tie_embeddings=False)]


@pytest.mark.parametrize("cfg", VARIANTS)
def test_param_count_matches_formula(cfg):
  modelzoo.check(cfg)
  assert count(cfg) == formula(cfg)


def test_layer_pattern_grammar():
  p8b = load("configs/mamba2_hybrid_8b.py").model.layer_pattern
  assert (len(p8b), p8b.count("M"), p8b.count("*"), p8b.count("-")) == (56, 24, 4, 28)
  assert unit_of("M*-M*-") == "M*-" and unit_of("MMMM") == "M" and unit_of(p8b) == p8b
  assert tiny("mamba2", layer_pattern="", n_layers=3).pattern == "MMM"
  for bad in (dict(layer_pattern="M*x-", n_layers=4), dict(layer_pattern="M*-", n_layers=4),
              dict(ssm_head_dim=24), dict(ssm_groups=3), dict(ssm_chunk=24, attn_impl="auto"),
              dict(pos="learned")):
    with pytest.raises(ConfigError, match="model\\."):
      modelzoo.check(tiny("mamba2", **bad))
  with pytest.raises(ConfigError, match="model.layer_pattern"):
    modelzoo.check(tiny("mamba", layer_pattern="MM"))


def test_every_param_has_logical_axis_names():
  leaves = jax.tree.leaves(abstract_params(HYBRID),
                           is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  allowed = {"vocab", "embed", "heads", "kv_heads", "kv", "mlp", "layers", "norm", None}
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= allowed, leaf.names


@functools.cache
def init(cfg, T=16):
  return nn.unbox(jax.jit(modelzoo.build(cfg).init)(jax.random.PRNGKey(0),
                                                    jnp.zeros((1, T), jnp.int32))["params"])


def test_periodic_pattern_scan_equals_unrolled():
  p = init(HYBRID)
  unit = unit_of(HYBRID.layer_pattern)
  flat = {k: v for k, v in p.items() if k != "layers"}
  for i, kind in enumerate(HYBRID.layer_pattern):
    r, j = divmod(i, len(unit))
    sub = {"M": "mamba", "*": "attn", "-": "mlp"}[kind]
    flat[f"layers_{i}"] = jax.tree.map(lambda x: x[r], p["layers"][f"{sub}_{j}"])
  x = jax.random.randint(jax.random.PRNGKey(1), (2, 20), 0, HYBRID.vocab_size)
  unrolled = dataclasses.replace(HYBRID, scan_layers=False)
  a = jax.jit(modelzoo.build(HYBRID).apply)({"params": p}, x)
  b = jax.jit(modelzoo.build(unrolled).apply)({"params": flat}, x)
  np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cfg", [MAMBA, HYBRID], ids=["mamba", "mamba2_hybrid"])
def test_recurrent_decode_equals_chunked_forward(cfg):
  """The chunked kernels (forward pass, T=36 = 2 chunks of 16 + a padded tail) against decoding:
  single-token recurrent steps from an empty cache, a chunked prefill that starts from a non-zero
  cached conv/SSM state (and KV cache), then single steps again."""
  p = init(cfg)
  seq = jax.random.randint(jax.random.PRNGKey(5), (2, 36), 0, cfg.vocab_size)
  full = jax.jit(modelzoo.build(cfg).apply)({"params": p}, seq)
  md = modelzoo.build(cfg, decode=True)
  shapes = jax.eval_shape(lambda: md.init(jax.random.PRNGKey(0), seq)["cache"])
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes))
  step = jax.jit(lambda v, x, pos: md.apply(v, x, pos, mutable=["cache"]))
  for a, b in [(0, 1), (1, 2), (2, 3), (3, 30), (30, 31), (31, 32), (32, 33)]:
    pos = jnp.broadcast_to(jnp.arange(a, b), (2, b - a))
    logits, upd = step({"params": p, "cache": cache}, seq[:, a:b], pos)
    cache = upd["cache"]
    np.testing.assert_allclose(logits, full[:, a:b], atol=5e-5, err_msg=f"tokens {a}:{b}")
  # the recurrent state really is used: a fresh cache gives different logits at token 33
  fresh = jax.tree.map(jnp.zeros_like, cache)
  other, _ = step({"params": p, "cache": fresh}, seq[:, 33:34], jnp.full((2, 1), 33))
  assert not np.allclose(other, full[:, 33:34], atol=1e-3)
  # sampling through generate(): the cache gives exactly the tokens of full recomputation
  prompt = seq[:, :5]
  kw = dict(model_cfg=cfg, max_new=9, temperature=0.8, top_k=5)
  with_cache = generate(p, prompt, jax.random.PRNGKey(4), use_cache=True, **kw)
  without = generate(p, prompt, jax.random.PRNGKey(4), use_cache=False, **kw)
  np.testing.assert_array_equal(with_cache, without)
  np.testing.assert_array_equal(with_cache[:, :5], prompt)


def test_packed_sequences_are_refused():
  """By validation, before anything traces; a model handed segment ids anyway refuses them."""
  for path in ("configs/mamba_tiny.py", "configs/mamba2_hybrid_tiny.py"):
    with pytest.raises(ConfigError, match="data.pack"):
      validate(load(path, ["data.pack=true"]), 1)
  x = jnp.zeros((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="segment ids"):
    jax.eval_shape(lambda: modelzoo.build(MAMBA).init(jax.random.PRNGKey(0), x, jnp.arange(8)[None],
                                                      jnp.ones((1, 8), jnp.int32)))


TRAIN = ["model.d_model=32", "data.seq_len=32", "model.max_len=32", "train.batch_size=8",
         "train.steps=30", "train.warmup_steps=3", "train.lr=3e-3", "train.log_every=5",
         "train.eval_every=30", "train.eval_steps=2", "model.ssm_chunk=16", "model.d_state=8",
         "data.source=text"]


@pytest.mark.parametrize("config, extra", [
    ("configs/mamba_tiny.py", ["model.n_layers=2"]),
    ("configs/mamba2_hybrid_tiny.py", ["model.layer_pattern=M*-", "model.n_layers=3",
                                       "model.ssm_head_dim=16", "model.d_ff=64"]),
], ids=["mamba", "mamba2_hybrid"])
def test_tiny_config_trains_and_samples(config, extra, tmp_path, corpus, capsys):
  assert entry.train(["--config", config, "--workdir", str(tmp_path), *TRAIN, *extra,
                     f"data.path={corpus}"]) == 0
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses[-1] < 0.7 * losses[0], losses
  capsys.readouterr()
  assert entry.eval_(["--workdir", str(tmp_path), "--sample", "the cat", "--max-new-tokens",
                       "8"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["step"] == 30 and out["eval_loss"] < losses[0]
  assert out["sample"].startswith("the cat") and len(out["sample"]) > 7


# ---------------------------------------------------------------------------------------------
# The LTI ablation (model.ssm_selective=false): Δ, B, C learned parameters, not functions of x.

LTI = tiny("mamba", ssm_selective=False)


def test_lti_parameter_count_and_flops():
  """x_proj (E·(R+2N)) and dt_proj (R·E + E) go, dt_bias (E) and B, C (2·E·N) come: -2·R·E per
  layer; the FLOP count is 6N of that N plus the same scan term."""
  n_sel, n_lti = count(MAMBA), count(LTI)
  E, R = LTI.inner, LTI.rank
  assert n_lti == formula(LTI) and n_sel - n_lti == LTI.n_layers * 2 * R * E
  kernel = 3 * 6.0 * LTI.n_layers * E * LTI.d_state
  assert modelzoo.flops_per_token(LTI, n_lti, 32) == 6.0 * n_lti + kernel
  assert modelzoo.kernel_flops_per_token(LTI, 32) == modelzoo.kernel_flops_per_token(MAMBA, 32)
  with pytest.raises(ConfigError, match="model.dt_rank"):
    modelzoo.check(tiny("mamba", ssm_selective=False, dt_rank=2))
  assert validate(load("configs/mamba_tiny.py", ["model.ssm_selective=false"]), 1) is None


def test_lti_delta_B_C_do_not_depend_on_the_input():
  """Changing the input at position 9 changes the selective mixer's Δ, B, C there (and nothing
  before it); the LTI mixer's are parameters: no time axis, identical for any input."""
  u = jax.random.normal(jax.random.PRNGKey(0), (1, 16, 16))
  u2 = u.at[0, 9].add(1.0)
  for sel in (True, False):
    m = Mamba(d_state=4, expand=2, chunk=8, dt_rank=2, selective=sel, impl="xla",
              use_bias=False, init_std=0.3, out_std=0.3)
    p = jax.jit(m.init)(jax.random.PRNGKey(1), u)["params"]
    run = jax.jit(lambda x, m=m, p=p: m.apply({"params": p}, x,
                                              mutable=["intermediates"])[1]["intermediates"])
    a, b = run(u), run(u2)
    for name in ("delta", "B", "C"):
      (x,), (y,) = a[name], b[name]
      if sel:
        np.testing.assert_array_equal(x[:, :9], y[:, :9])
        assert np.abs(x - y)[:, 9].max() > 0, name
      else:
        assert x.shape == ((32,) if name == "delta" else (32, 4)), name
        np.testing.assert_array_equal(x, y)


def naive_lti_mixer(p, u_BTD):
  """The whole mixer with the LTI recurrence one token at a time, from the module's parameters:
  x, z = in_proj(u); x = SiLU(conv(x)); h = exp(ΔA) h + Δ x B; y = Σ_n h C; out_proj((y + D x) z')."""
  xz = jnp.einsum("btd,dce->btce", u_BTD, p["in_proj"]["kernel"])
  w, c = p["conv"]["kernel"], p["conv"]["bias"]
  K, T = w.shape[0], u_BTD.shape[1]
  xp = jnp.pad(xz[..., 0, :], ((0, 0), (K - 1, 0), (0, 0)))
  x = jax.nn.silu(sum(xp[:, k:k + T] * w[k] for k in range(K)) + c)
  dt, A = jax.nn.softplus(p["dt_bias"]), -jnp.exp(p["A_log"])

  def tok(h_BEN, x_BE):
    h_BEN = jnp.exp(dt[:, None] * A) * h_BEN + (dt * x_BE)[..., None] * p["B"]
    return h_BEN, (h_BEN * p["C"]).sum(-1)
  _, y_TBE = jax.lax.scan(tok, jnp.zeros(x.shape[:1] + A.shape), jnp.swapaxes(x, 0, 1))
  y = (jnp.swapaxes(y_TBE, 0, 1) + x * p["D"]) * jax.nn.silu(xz[..., 1, :])
  return y @ p["out_proj"]["kernel"]


def test_lti_mixer_equals_naive_recurrence():
  """Through the selective-scan kernel == the per-token LTI recurrence (T=21 = 2 chunks of 8 + a
  padded tail; B perturbed away from its init of ones): the forward on the xla and interpret
  (Pallas TPU body: E·N channels of state size 1) paths, gradients of every parameter and the
  input through the Pallas kernel's backward; decoding (single steps, then a chunked prefill from
  the cached state) on the xla path."""
  u = jax.random.normal(jax.random.PRNGKey(0), (2, 21, 16))
  mixer = functools.partial(Mamba, d_state=4, expand=2, chunk=8, dt_rank=1, selective=False,
                            use_bias=False, init_std=0.3, out_std=0.3)
  p = nn.unbox(jax.jit(mixer(impl="xla").init)(jax.random.PRNGKey(1), u)["params"])
  assert set(p) == {"in_proj", "conv", "dt_bias", "B", "C", "A_log", "D", "out_proj"}
  p = {**p, "B": p["B"] + 0.3 * jax.random.normal(jax.random.PRNGKey(3), p["B"].shape)}
  ref = naive_lti_mixer(p, u)
  tol = 1e-5 * float(jnp.abs(ref).max())
  for impl in ("xla", "interpret"):
    np.testing.assert_allclose(jax.jit(mixer(impl=impl).apply)({"params": p}, u), ref, atol=tol)
  loss = lambda f: lambda p, u: (f(p, u) * jnp.cos(jnp.arange(16.0))).sum()
  m = mixer(impl="interpret")
  g = jax.jit(jax.grad(loss(lambda p, u: m.apply({"params": p}, u)), argnums=(0, 1)))(p, u)
  gr = jax.jit(jax.grad(loss(naive_lti_mixer), argnums=(0, 1)))(p, u)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(gr)):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()))
  md = mixer(impl="xla", decode=True)
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(md.init, jax.random.PRNGKey(1), u)["cache"])
  step = jax.jit(lambda c, x: md.apply({"params": p, "cache": c}, x, mutable=["cache"]))
  for a, b in [(0, 1), (1, 19), (19, 20)]:
    out, cache = step(cache, u[:, a:b])
    cache = cache["cache"]
    np.testing.assert_allclose(out, ref[:, a:b], atol=tol, err_msg=f"tokens {a}:{b}")
