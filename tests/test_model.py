"""The decoder LM: parameter counts against analytic formulas and published sizes, logical axis names,
scan == unrolled, packed sequences == separate sequences, KV-cache decoding == full forward."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modelzoo
from configs.base import gpt2_style, llama_style
from interop.generate import generate


def n_params_formula(c) -> int:
  """Independent count: embeddings + L x (attention + MLP + norms) + final norm + head."""
  V, D, L, H, F, T = c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.d_ff, c.max_len
  K, Dh = c.n_kv_heads or H, c.d_head or D // H
  b = 1 if c.use_bias else 0
  norm = D * (2 if c.norm == "layernorm" and c.norm_bias else 1)
  attn = D * H * Dh + 2 * D * K * Dh + H * Dh * D + b * (H * Dh + 2 * K * Dh + D)
  mlp = 3 * D * F + b * (2 * F + D) if c.mlp == "swiglu" else 2 * D * F + b * (F + D)
  final = norm if c.norm_placement == "pre" else 0
  return (V * D + (T * D if c.pos == "learned" else 0) + L * (attn + mlp + 2 * norm) + final
          + (0 if c.tie_embeddings else D * V))


def count(cfg) -> int:
  shapes = jax.eval_shape(lambda: modelzoo.build(cfg).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 8), jnp.int32)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes["params"])))


TINY = [
    gpt2_style(vocab_size=61, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16),
    gpt2_style(vocab_size=61, d_model=32, n_layers=3, n_heads=2, d_ff=96, max_len=16, use_bias=False,
               norm_bias=False, scan_layers=False),
    llama_style(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_len=16),
    llama_style(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=48, max_len=16,
                norm_placement="post"),
]


@pytest.mark.parametrize("cfg", TINY)
def test_param_count_matches_formula(cfg):
  assert count(cfg) == n_params_formula(cfg)


def test_published_sizes():
  # GPT-2 small as in nanoGPT (124M, tied, biases) and Llama-2 7B (untied, no biases).
  gpt2 = gpt2_style(vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_len=1024)
  assert count(gpt2) == 124_439_808
  llama7b = llama_style(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
                        max_len=4096)
  assert count(llama7b) == 6_738_415_616


def test_every_param_has_logical_axis_names():
  cfg = TINY[2]
  boxed = jax.eval_shape(lambda: modelzoo.build(cfg).init(jax.random.PRNGKey(0),
                                                         jnp.zeros((1, 8), jnp.int32)))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  allowed = {"vocab", "embed", "heads", "kv_heads", "kv", "mlp", "layers", "norm", None}
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= allowed, leaf.names
  assert boxed["layers"]["attn"]["query"]["kernel"].names == ("layers", "embed", "heads", "kv")


def init(cfg, T=16, seed=0):
  return nn.unbox(modelzoo.build(cfg).init(jax.random.PRNGKey(seed),
                                           jnp.zeros((1, T), jnp.int32))["params"])


def test_scan_equals_unrolled():
  cfg = TINY[0]
  p = init(cfg)
  unrolled = dataclasses.replace(cfg, scan_layers=False)
  pu = {k: v for k, v in p.items() if k != "layers"}
  for i in range(cfg.n_layers):
    pu[f"layers_{i}"] = jax.tree.map(lambda x: x[i], p["layers"])
  x = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, cfg.vocab_size)
  a = jax.jit(modelzoo.build(cfg).apply)({"params": p}, x)
  b = jax.jit(modelzoo.build(unrolled).apply)({"params": pu}, x)
  np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cfg", [TINY[0], TINY[2]])
def test_packed_sequences_equal_separate_sequences(cfg):
  p = init(cfg)
  m = modelzoo.build(cfg)
  apply = jax.jit(m.apply)
  a = jax.random.randint(jax.random.PRNGKey(1), (1, 10), 0, cfg.vocab_size)
  b = jax.random.randint(jax.random.PRNGKey(2), (1, 6), 0, cfg.vocab_size)
  packed = jnp.concatenate([a, b], 1)
  pos = jnp.concatenate([jnp.arange(10), jnp.arange(6)])[None]
  seg = jnp.concatenate([jnp.ones(10, jnp.int32), 2 * jnp.ones(6, jnp.int32)])[None]
  out = apply({"params": p}, packed, pos, seg)
  np.testing.assert_allclose(out[:, :10], apply({"params": p}, a), atol=2e-5)
  np.testing.assert_allclose(out[:, 10:], apply({"params": p}, b), atol=2e-5)
  # and without segment ids the second document does see the first (the test can fail)
  assert not np.allclose(apply({"params": p}, packed, pos)[:, 10:], out[:, 10:], atol=1e-3)


def test_remat_keeps_values_and_grads():
  cfg = TINY[2]
  p = init(cfg)
  x = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, cfg.vocab_size)
  loss = lambda c: lambda p: modelzoo.build(c).apply({"params": p}, x).astype(jnp.float32).mean()
  g0 = jax.jit(jax.grad(loss(cfg)))(p)
  for policy in ("full", "dots"):
    rc = dataclasses.replace(cfg, remat=policy)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, jax.jit(jax.grad(loss(rc)))(p))


@pytest.mark.parametrize("cfg", [TINY[0], TINY[3]])
def test_kv_cache_decoding_equals_full_forward(cfg):
  p = init(cfg)
  prompt = jax.random.randint(jax.random.PRNGKey(3), (2, 5), 0, cfg.vocab_size)
  for temperature, top_k in ((0.8, 5),):
    kw = dict(model_cfg=cfg, max_new=9, temperature=temperature, top_k=top_k)
    with_cache = generate(p, prompt, jax.random.PRNGKey(4), use_cache=True, **kw)
    without = generate(p, prompt, jax.random.PRNGKey(4), use_cache=False, **kw)
    np.testing.assert_array_equal(with_cache, without)
    np.testing.assert_array_equal(with_cache[:, :5], prompt)
  # the cached logits themselves equal the full forward pass
  m, md = modelzoo.build(cfg), modelzoo.build(cfg, decode=True)
  step = jax.jit(lambda v, x, pos: md.apply(v, x, pos, mutable=["cache"]))
  seq = jax.random.randint(jax.random.PRNGKey(5), (2, 12), 0, cfg.vocab_size)
  full = jax.jit(m.apply)({"params": p}, seq)
  cache = jax.tree.map(jnp.zeros_like, nn.unbox(md.init(jax.random.PRNGKey(0), seq)["cache"]))
  logits, upd = step({"params": p, "cache": cache}, seq[:, :7], jnp.broadcast_to(jnp.arange(7), (2, 7)))
  np.testing.assert_allclose(logits, full[:, :7], atol=2e-5)
  cache = upd["cache"]
  for t in range(7, 12):
    logits, upd = step({"params": p, "cache": cache}, seq[:, t:t + 1], jnp.full((2, 1), t))
    cache = upd["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, t], atol=2e-5)
