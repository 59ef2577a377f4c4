"""DeltaNet (layers/deltanet.py, modelzoo/deltanet.py): paper-scale parameter counts, training, the
recurrent decode against the chunked kernel, packed documents, the hybrids' layer layouts."""
import json
from dataclasses import replace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import entry
import modelzoo
from configs import base
from layers.deltanet import DeltaNetMixer
from modelzoo.deltanet import model as deltanet
from interop.generate import generate

# fla-hub/delta_net-1.3B-100B, the paper's released 1.3B model: its config.json (d 2048, 24 layers,
# 16 heads, SwiGLU 5632, vocab 32000, untied) and its 2.73 GB of bfloat16 weights give 1,365,677,056
# parameters. The paper's "1.3B" is the rounded name of this model.
PAPER_1P3B = 1_365_677_056


def n_params_formula(c) -> int:
  """Independent count: embeddings + per layer (2 RMSNorms + SwiGLU + mixer) + final norm + head."""
  V, D, L, H, F = c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.d_ff
  Dh = c.d_head or D // H
  Kv = c.n_kv_heads or H
  n_attn = {"none": 0, "swa": L // 2, "global": 2}[c.dn_hybrid]
  attn = D * H * Dh + 2 * D * Kv * Dh + H * Dh * D
  delta = (4 * D * H * Dh                            # q, k, v, out projections
           + 3 * c.dn_conv * H * Dh                  # depthwise conv kernels on q, k, v
           + (D * H if c.dn_rule == "delta" else 0)  # beta projection (none in linear attention)
           + Dh                                      # per-head output RMSNorm (shared scale)
           + (D * H * Dh if c.dn_gate else 0)        # output gate projection
           + (D * H + 2 * H if c.dn_decay else 0))   # decay projection, A_log, dt_bias
  layers = L * (2 * D + 3 * D * F) + n_attn * attn + (L - n_attn) * delta
  return V * D * (1 if c.tie_embeddings else 2) + layers + D


def count(cfg) -> int:
  shapes = jax.eval_shape(lambda: modelzoo.build(cfg).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 8), jnp.int32)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes["params"])))


@pytest.mark.parametrize("name", ["deltanet_1p3b", "deltanet_1p3b_swa", "deltanet_1p3b_global"])
def test_paper_scale_parameter_counts(name):
  cfg = base.load(f"configs/{name}.py").model
  modelzoo.check(cfg)
  n = count(cfg)
  assert n == n_params_formula(cfg)
  assert abs(n / PAPER_1P3B - 1) < 0.02, n
  if name == "deltanet_1p3b":
    assert n == PAPER_1P3B


TINY = base.llama_style(name="deltanet", vocab_size=61, d_model=32, n_layers=2, n_heads=2,
                        d_ff=64, max_len=64, pos="rope", tie_embeddings=False, dn_chunk=16,
                        dn_decay=True, dn_gate=True, dn_hybrid="swa", dn_window=6)


def test_tiny_formula_and_logical_names():
  for kw in ({}, {"dn_hybrid": "none", "dn_decay": False, "dn_gate": False, "dn_conv": 0},
             {"dn_hybrid": "global", "n_layers": 6, "n_kv_heads": 1}):
    cfg = replace(TINY, **kw)
    assert count(cfg) == n_params_formula(cfg), kw
  boxed = jax.eval_shape(lambda: modelzoo.build(TINY).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 8), jnp.int32)))["params"]
  allowed = {"vocab", "embed", "heads", "kv_heads", "kv", "mlp", "layers", "norm", None}
  for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
    assert isinstance(leaf, nn.LogicallyPartitioned) and set(leaf.names) <= allowed, leaf


def test_layouts_and_config_errors():
  assert replace(TINY, n_layers=6).layout == "DSDSDS"
  glob = replace(TINY, dn_hybrid="global", n_layers=24)
  assert glob.layout == "DA" + "D" * 10 + "A" + "D" * 11     # layers 2 and 13, 1-based
  assert deltanet.runs(glob.layout) == [("D", 1), ("A", 1), ("D", 10), ("A", 1),
                                                   ("D", 11)]
  assert deltanet.runs("DSDSDS") == [("DS", 3)]
  for kw, key in (({"dn_chunk": 8}, "dn_chunk"), ({"dn_hybrid": "x"}, "dn_hybrid"),
                  ({"n_layers": 3}, "n_layers"), ({"pos": "learned"}, "pos")):
    with pytest.raises(base.ConfigError, match=key):
      modelzoo.check(replace(TINY, **kw))


T = 40   # the one sequence length of the forward-pass tests: 3 chunks of C=16, past the window 6


@pytest.fixture(scope="module")
def params():
  init = jax.jit(lambda x: modelzoo.build(TINY).init(jax.random.PRNGKey(0), x)["params"])
  return nn.unbox(init(jnp.zeros((1, T), jnp.int32)))


@pytest.fixture(scope="module")
def apply():
  return jax.jit(modelzoo.build(TINY).apply)


def test_recurrent_decode_equals_chunked_forward_and_generate(params, apply):
  """Decode (conv states + delta state, one token at a time; KV cache with a window) == the
  chunked forward pass across several chunks and past the attention window."""
  cfg, p = TINY, params
  md = modelzoo.build(cfg, decode=True)
  seq = jax.random.randint(jax.random.PRNGKey(5), (2, T), 0, cfg.vocab_size)
  full = apply({"params": p}, seq, jnp.broadcast_to(jnp.arange(T), (2, T)),
               jnp.ones((2, T), jnp.int32))
  step = jax.jit(lambda v, x, pos: md.apply(v, x, pos, mutable=["cache"]))
  shapes = jax.eval_shape(lambda: md.init(jax.random.PRNGKey(0), seq)["cache"])
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes))
  logits, upd = step({"params": p, "cache": cache}, seq[:, :7],
                     jnp.broadcast_to(jnp.arange(7), (2, 7)))
  np.testing.assert_allclose(logits, full[:, :7], atol=2e-5)
  cache = upd["cache"]
  for t in range(7, T):
    logits, upd = step({"params": p, "cache": cache}, seq[:, t:t + 1], jnp.full((2, 1), t))
    cache = upd["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, t], atol=2e-5, err_msg=f"t={t}")
  assert float(jnp.abs(cache["layers"]["block0"]["mixer"]["state"]).max()) > 1e-3
  prompt = seq[:, :5]
  kw = dict(model_cfg=cfg, max_new=9, temperature=0.8, top_k=5)
  with_cache = generate(p, prompt, jax.random.PRNGKey(4), use_cache=True, **kw)
  np.testing.assert_array_equal(with_cache, generate(p, prompt, jax.random.PRNGKey(4),
                                                     use_cache=False, **kw))
  np.testing.assert_array_equal(with_cache[:, :5], prompt)


def test_packed_documents_equal_separate_documents(params, apply):
  """The state reset and the conv's segment mask: doc b packed after doc a == doc b alone."""
  cfg, p = TINY, params
  a = jax.random.randint(jax.random.PRNGKey(1), (23,), 0, cfg.vocab_size)
  b = jax.random.randint(jax.random.PRNGKey(2), (17,), 0, cfg.vocab_size)
  packed = jnp.concatenate([a, b])
  pos = jnp.concatenate([jnp.arange(23), jnp.arange(17)])
  seg = jnp.concatenate([jnp.ones(23, jnp.int32), 2 * jnp.ones(17, jnp.int32)])
  # the separate documents, right-padded to the same shape (causal: padding cannot leak back)
  alone = jnp.stack([jnp.pad(b, (0, T - 17)), jnp.pad(a, (0, T - 23))])
  out = apply({"params": p}, jnp.stack([packed, packed]), jnp.stack([pos, pos]),
              jnp.stack([seg, seg]))
  ref = apply({"params": p}, alone, jnp.broadcast_to(jnp.arange(T), (2, T)),
              jnp.ones((2, T), jnp.int32))
  np.testing.assert_allclose(out[0, 23:], ref[0, :17], atol=2e-5)
  np.testing.assert_allclose(out[0, :23], ref[1, :23], atol=2e-5)
  one_doc = apply({"params": p}, jnp.stack([packed, packed]), jnp.stack([pos, pos]),
                  jnp.ones((2, T), jnp.int32))
  assert not np.allclose(one_doc[0, 23:], out[0, 23:], atol=1e-3)   # the reset does something


def test_train_steps_lower_the_loss(tmp_path, corpus):
  """Gated DeltaNet + sliding-window hybrid through train.py (the chunked kernel's backward)."""
  over = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
          "model.max_len=32", "model.dn_chunk=16", "model.dn_decay=true", "model.dn_gate=true",
          "model.dn_hybrid=swa", "model.dn_window=8", "data.seq_len=32", "data.source=text",
          f"data.path={corpus}", "train.batch_size=8", "train.steps=40", "train.lr=3e-3",
          "train.warmup_steps=2", "train.log_every=5", "train.eval_every=1000",
          "train.eval_steps=2"]
  assert entry.train(["--config", "configs/deltanet_tiny.py", "--workdir", str(tmp_path),
                     *over]) == 0
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses[-1] < 0.6 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# model.dn_rule=linear: plain linear attention (S += k v^T), the paper's baseline, through SSD.

def test_linear_rule_parameters_flops_and_config_errors():
  """The same model minus the beta projection (D·H per layer); the SSD FLOP term per head and
  token 3·(4CK + 4K²); no decay, no packed sequences."""
  dn = replace(TINY, dn_hybrid="none", dn_decay=False)
  lin = replace(dn, dn_rule="linear")
  modelzoo.check(lin)
  assert count(lin) == n_params_formula(lin) == count(dn) - dn.n_layers * dn.d_model * dn.n_heads
  H, K, C = lin.n_heads, lin.head_dim, lin.dn_chunk
  assert modelzoo.kernel_flops_per_token(lin, 40) == lin.n_layers * 3.0 * H * (4 * C * K
                                                                               + 4 * K * K)
  assert count(replace(lin, dn_hybrid="swa")) == n_params_formula(replace(lin, dn_hybrid="swa"))
  with pytest.raises(base.ConfigError, match="model.dn_decay"):
    modelzoo.check(replace(lin, dn_decay=True))
  with pytest.raises(base.ConfigError, match="data.pack"):
    base.validate(base.load("configs/deltanet_tiny.py", ["model.dn_rule=linear", "data.pack=true"]),
                  1)
  base.validate(base.load("configs/deltanet_tiny.py", ["model.dn_rule=linear"]), 1)


def naive_linear_mixer(p, x_BTD, H, K):
  """The mixer with linear attention one token at a time, from the module's parameters:
  q, k, v = SiLU(conv(W x)); q, k L2-normalised; S_t = S_{t-1} + k_t v_tᵀ; o_t = S_tᵀ q_t / √K;
  out(RMSNorm(o))."""
  def branch(name):
    y = jnp.einsum("btd,dhk->bthk", x_BTD, p[name]["kernel"])
    w, T = p["conv_" + name[0]], y.shape[1]
    yp = jnp.pad(y, ((0, 0), (w.shape[0] - 1, 0), (0, 0), (0, 0)))
    return jax.nn.silu(sum(yp[:, j:j + T] * w[j] for j in range(w.shape[0])))
  unit = lambda a: a / jnp.sqrt((a * a).sum(-1, keepdims=True) + 1e-6)
  q, k, v = unit(branch("query")), unit(branch("key")), branch("value")

  def tok(S, qkv):
    q, k, v = qkv
    S = S + jnp.einsum("bhk,bhv->bhkv", k, v)
    return S, jnp.einsum("bhkv,bhk->bhv", S, q) / jnp.sqrt(K)
  _, o = jax.lax.scan(tok, jnp.zeros((x_BTD.shape[0], H, K, K)),
                      tuple(jnp.swapaxes(a, 0, 1) for a in (q, k, v)))
  o = jnp.swapaxes(o, 0, 1)
  o = o * jax.lax.rsqrt((o * o).mean(-1, keepdims=True) + 1e-6) * p["out_norm"]["scale"]
  return jnp.einsum("bthk,hkd->btd", o, p["out"]["kernel"])


def test_linear_attention_equals_naive_recurrence():
  """Through kernels.ssd (no decay) == the per-token recurrence, T=37 = 2 chunks of 16 + a padded
  tail: the forward on the xla and interpret (Pallas TPU body) paths, gradients of every
  parameter and the input through the xla path's backward, and the decode path (the recurrent
  scan over the same tokens)."""
  H, K = 2, 8
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 37, 16))
  mixer = lambda **kw: DeltaNetMixer(n_heads=H, d_head=K, rule="linear", chunk_size=16,
                                     use_bias=False, init_std=0.3, out_std=0.3, **kw)
  p = nn.unbox(jax.jit(mixer(impl="xla").init)(jax.random.PRNGKey(1), x)["params"])
  assert "beta" not in p
  ref = naive_linear_mixer(p, x, H, K)
  for impl in ("xla", "interpret"):
    np.testing.assert_allclose(jax.jit(mixer(impl=impl).apply)({"params": p}, x), ref,
                               atol=2e-5 * float(jnp.abs(ref).max()), err_msg=impl)
  loss = lambda f: lambda p, x: (f(p, x) * jnp.cos(jnp.arange(16.0))).sum()
  m = mixer(impl="xla")
  g = jax.jit(jax.grad(loss(lambda p, x: m.apply({"params": p}, x)), argnums=(0, 1)))(p, x)
  gr = jax.jit(jax.grad(loss(lambda p, x: naive_linear_mixer(p, x, H, K)), argnums=(0, 1)))(p, x)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(gr)):
    np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(b).max()))
  md = mixer(impl="xla", decode=True)
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(md.init, jax.random.PRNGKey(1), x)["cache"])
  out, _ = jax.jit(lambda c: md.apply({"params": p, "cache": c}, x, mutable=["cache"]))(cache)
  np.testing.assert_allclose(out, ref, atol=2e-5 * float(jnp.abs(ref).max()))
