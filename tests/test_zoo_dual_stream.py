"""The Dual-Stream Transformer: paper-scale sizes against a formula, head mixing against the lifted
matrices, the token-stream invariant (V reads x_t only), hooks, logit_scale on every path, KV-cache
decoding == full forward, and a tiny run whose loss falls, evaluated with attention amplification."""
import dataclasses
import json

import entry
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import modelzoo
from configs import base
from interop.generate import generate
from layers import sharding
from layers.head_mix import HeadMix
from modelzoo.dual_stream.model import interpret


def n_params_formula(c) -> int:
  """Embedding + L x (dense Q, K + four mixing maps + CLN1, CLN2, CLN_v) + LN_f (+ untied head)."""
  V, D, L, H, F = c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.d_ff
  Dh = D // H
  attn_mix = {"dense": D * D, "kronecker": H * H, "independent": H * Dh * Dh}
  ffn_mix = {"dense": D * F, "independent": H * Dh * (F // H)}
  norm = 2 * D if c.norm_bias else D
  layer = (2 * D * D + attn_mix[c.mix_v] + attn_mix[c.mix_o] + ffn_mix[c.mix_up]
           + ffn_mix[c.mix_down] + (3 if c.v_norm else 2) * norm)
  return V * D + L * layer + norm + (0 if c.tie_embeddings else D * V)


def count(cfg) -> int:
  shapes = jax.eval_shape(lambda: modelzoo.build(cfg).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 8), jnp.int32)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes["params"])))


@pytest.mark.parametrize("mix,paper", [("dense", 29.9e6), ("kronecker", 28.2e6),
                                       ("independent", 28.5e6), ("fully_independent", 22.55e6)])
def test_paper_scale_parameter_counts(mix, paper):
  cfg = base.load(f"configs/dual_stream_29m_{mix}.py").model
  modelzoo.check(cfg)
  attn, ffn = ("independent", "independent") if mix == "fully_independent" else (mix, "dense")
  assert (cfg.mix_v, cfg.mix_o, cfg.mix_up, cfg.mix_down) == (attn, attn, ffn, ffn)
  assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.vocab_size) == (6, 384, 6, 1536, 50257)
  n = count(cfg)
  assert n == n_params_formula(cfg)
  assert abs(n / paper - 1) < 0.02, n


def test_fully_independent_parameter_count_by_hand():
  """V, O, FFN-up and FFN-down per head, counted by hand from the shapes (not from the formula):
  per layer dense Q, K (2 d^2) + block-diagonal V, O (2 H d_h^2) + per-head FFN (2 H d_h d_ff/H)
  + CLN1, CLN2, CLN_v (3 x 2d); the tied embedding V d; LN_f 2d."""
  # tiny: V 256, d 128, L 4, H 4, d_h 32, d_ff 512 (128 per head)
  layer = 2 * 128 * 128 + 2 * 4 * 32 * 32 + 2 * 4 * 32 * 128 + 3 * 2 * 128     # = 74,496
  assert count(base.load("configs/dual_stream_tiny_fully_independent.py").model) == (
      256 * 128 + 4 * layer + 2 * 128) == 331_008
  # 29M shape: V 50257, d 384, L 6, H 6, d_h 64, d_ff 1536 (256 per head)
  layer = 2 * 384 * 384 + 2 * 6 * 64 * 64 + 2 * 6 * 64 * 256 + 3 * 2 * 384    # = 542,976
  assert count(base.load("configs/dual_stream_29m_fully_independent.py").model) == (
      50257 * 384 + 6 * layer + 2 * 384) == 22_557_312


def test_fully_independent_ffn_is_block_diagonal_per_head():
  """The FFN's Jacobian (output channel <- input channel) has nonzero d_h x d_h blocks on the head
  diagonal only: perturbing head g's input moves head g's output and nothing else. The dense FFN
  (the control) couples every pair of heads."""
  from modelzoo.dual_stream.model import DualStreamFFN
  H, Dh = 4, 8
  for mix in ("independent", "dense"):
    cfg = dataclasses.replace(TINY, d_model=H * Dh, n_heads=H, d_ff=4 * H * Dh, mix_up=mix,
                              mix_down=mix)
    ffn = DualStreamFFN(cfg)
    w = jax.random.normal(jax.random.PRNGKey(1), (H * Dh,))
    J = jax.jit(lambda w, ffn=ffn: jax.jacobian(lambda x: ffn.apply(
        nn.unbox(ffn.init(jax.random.PRNGKey(2), w[None, None])), x[None, None])[0, 0])(w))(w)
    block = np.abs(np.asarray(J)).reshape(H, Dh, H, Dh).max(axis=(1, 3))      # [out head, in head]
    assert (block.diagonal() > 1e-4).all(), block
    off = block[~np.eye(H, dtype=bool)]
    assert (off == 0).all() if mix == "independent" else (off > 1e-4).all(), (mix, block)


def test_formula_covers_the_other_variants():
  tiny = base.load("configs/dual_stream_tiny_dense.py").model
  for kw in ({"v_norm": False, "tie_embeddings": False, "mix_v": "kronecker",
              "mix_down": "independent"},
             {"cln": False, "norm_bias": False, "frozen_tokens": True, "mix_o": "independent"}):
    c = dataclasses.replace(tiny, **kw)
    assert count(c) == n_params_formula(c), kw


def test_every_param_has_logical_names_that_shard():
  # vocab padded to a multiple of 64: 50257 cannot be split (a property of the spine's Embed)
  cfg = dataclasses.replace(base.load("configs/dual_stream_29m_kronecker.py").model, vocab_size=50304)
  for c in (cfg, dataclasses.replace(cfg, mix_v="dense", mix_o="independent", mix_up="independent",
                                     mix_down="independent")):
    boxed = jax.eval_shape(lambda c=c: modelzoo.build(c).init(jax.random.PRNGKey(0),
                                                         jnp.zeros((1, 8), jnp.int32)))["params"]
    allowed = {"vocab", "embed", "heads", "kv_heads", "kv", "mlp", "layers", "norm", None}
    for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
      assert isinstance(leaf, nn.LogicallyPartitioned), leaf
      assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= allowed, leaf.names
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    for s, leaf in zip(jax.tree.leaves(sharding.shardings(boxed, mesh)),
                       jax.tree.leaves(nn.unbox(boxed))):   # no mesh axis used twice; dims divide
      assert s.shard_shape(leaf.shape), (s, leaf.shape)


@pytest.mark.parametrize("kind", ["dense", "kronecker", "independent"])
def test_head_mix_equals_the_lifted_matrix(kind):
  H, E = 3, 4
  F = 5 if kind != "kronecker" else E
  mod = HeadMix(kind, F)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, H, E))
  p = nn.unbox(mod.init(jax.random.PRNGKey(1), x))["params"]
  y = jax.jit(mod.apply)({"params": p}, x)
  if kind == "dense":
    W = p["kernel"].reshape(H * E, H * F)
  elif kind == "kronecker":            # W = M^T (x) I: output head h = sum_g M[h, g] * input head g
    W = np.kron(np.asarray(p["mix"]).T, np.eye(E))
  else:
    W = scipy.linalg.block_diag(*np.asarray(p["kernel"]))
  ref = np.asarray(x).reshape(2, 7, H * E) @ W
  np.testing.assert_allclose(np.asarray(y).reshape(2, 7, H * F), ref, atol=1e-5)


TINY = base.model_config(
    "dual_stream", vocab_size=61, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=32,
    pos="rope", mix_v="kronecker", mix_o="kronecker")


def init(cfg, T=16):
  return nn.unbox(modelzoo.build(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))["params"])


# Kronecker V/O on the raw token stream: the hooks test and the invariant test share one compile.
# M_V = M_O = I: attention's writes are of the embedding's size at init, so logit_scale moves the
# logits visibly (with the default init they start ~0.01x as large).
HOOKED = dataclasses.replace(TINY, v_norm=False, kron_init="identity")
TOK = jax.random.randint(jax.random.PRNGKey(3), (2, 16), 0, TINY.vocab_size)
POS, ONE = jnp.broadcast_to(jnp.arange(16), (2, 16)), jnp.ones((2, 16), jnp.int32)


def test_token_stream_stays_in_token_units():
  """Kronecker V/O on raw x_t: channel h of x_t is a combination of the embedding slices of the
  context tokens (every channel), at every layer. Dense mixing (the control) leaves that span, as
  would any leak of x_e into V."""
  for mix, inside in (("kronecker", True), ("dense", False)):
    cfg = dataclasses.replace(HOOKED, mix_v=mix, mix_o=mix)
    p = init(cfg)
    out = jax.device_get(interpret(p, TOK, POS, ONE, model_cfg=cfg, per_head=True))
    E = np.asarray(p["embed"]["embedding"])[np.asarray(TOK[0])].reshape(16, 2, 16)  # [T, H, Dh]
    worst = 0.0
    for i in range(7):
      basis = E[:i + 1].reshape(-1, 16).T                 # 2(i+1) <= 14 < 16 vectors: not all of R^16
      for h in range(2):
        x = out["x_t"][-1, 0, i].reshape(2, 16)[h]
        upd = x - out["x_t"][0, 0, i].reshape(2, 16)[h]
        resid = x - basis @ np.linalg.lstsq(basis, x, rcond=None)[0]
        worst = max(worst, np.linalg.norm(resid) / np.linalg.norm(upd))
    assert (worst < 1e-3) == inside, (mix, worst)


def test_hooks_logit_scale_and_frozen_tokens():
  """interpret() materialises attention; its logits equal the kernel path's at every logit scale
  (so the maps are the real ones and logit_scale reaches the kernel), with and without packing."""
  cfg, tok, pos, one = HOOKED, TOK, POS, ONE
  p = init(cfg)
  fwd = jax.jit(modelzoo.build(cfg).apply)
  seg = one.at[:, 10:].set(2)                          # two documents: 10 + 6 tokens
  pos2 = jnp.concatenate([jnp.arange(10), jnp.arange(6)])[None].repeat(2, 0)
  outs = {}
  for alpha in (1.0, 8.0):
    for name, (ps, ss) in {"plain": (pos, one), "packed": (pos2, seg)}.items():
      o = interpret(p, tok, ps, ss, model_cfg=cfg, logit_scale=alpha, per_head=True)
      outs[alpha, name] = o
      np.testing.assert_allclose(o["logits"], fwd({"params": p}, tok, ps, ss, logit_scale=alpha),
                                 atol=2e-5)
      np.testing.assert_allclose(o["lens"][-1], o["logits"], atol=2e-5)  # last lens = the output
    assert float(jnp.abs(outs[alpha, "packed"]["attn"][:, :, :, 10:, :10]).max()) == 0.0
    assert float(jnp.abs(outs[alpha, "plain"]["attn"][:, :, :, 10:, :10]).max()) > 0.0
  o1, o8 = outs[1.0, "plain"], outs[8.0, "plain"]
  a = o1["attn"]                                       # [L, B, H, T, S]
  assert a.shape == (2, 2, 2, 16, 16) and o1["lens_t_heads"].shape == (3, 2, 16, 2, 61)
  np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
  assert float(jnp.abs(jnp.triu(a, 1)).max()) == 0.0
  assert not np.allclose(o8["logits"], o1["logits"], atol=1e-4)
  assert float(o8["attn"].max(-1).mean()) > float(a.max(-1).mean())   # sharper attention
  E = p["embed"]["embedding"][tok]
  np.testing.assert_allclose(o1["x_t"][0], E)
  assert float(jnp.abs(o1["x_e"][0]).max()) == 0.0
  assert not np.allclose(o1["x_t"][-1], E, atol=1e-4)
  fts = dataclasses.replace(cfg, frozen_tokens=True)
  o = interpret(init(fts), tok, pos, one, model_cfg=fts, per_head=True)
  np.testing.assert_allclose(o["x_t"], jnp.broadcast_to(E, o["x_t"].shape))  # x_t never written
  assert float(jnp.abs(o["x_e"][-1]).max()) > 0


@pytest.mark.parametrize("cfg,sample", [
    (dataclasses.replace(TINY, mix_o="independent", mix_up="independent", mix_down="independent"),
     True),
    (dataclasses.replace(TINY, mix_v="dense", mix_o="dense", frozen_tokens=True, v_norm=False,
                         scan_layers=False), False)])
def test_kv_cache_decoding_equals_full_forward(cfg, sample):
  p = init(cfg)
  if sample:   # generate() with the cache == by recomputation (amplified attention, as eval.py does)
    prompt = jax.random.randint(jax.random.PRNGKey(3), (2, 5), 0, cfg.vocab_size)
    kw = {"model_cfg": cfg, "max_new": 9, "temperature": 0.8, "top_k": 5, "logit_scale": 4.0}
    with_cache = generate(p, prompt, jax.random.PRNGKey(4), use_cache=True, **kw)
    without = generate(p, prompt, jax.random.PRNGKey(4), use_cache=False, **kw)
    np.testing.assert_array_equal(with_cache, without)
  # cached logits == full forward, with logit_scale reaching the decode path too
  m, md = modelzoo.build(cfg), modelzoo.build(cfg, decode=True)
  step = jax.jit(lambda v, x, pos, a: md.apply(v, x, pos, logit_scale=a, mutable=["cache"]))
  seq = jax.random.randint(jax.random.PRNGKey(5), (2, 12), 0, cfg.vocab_size)
  cache0 = jax.tree.map(jnp.zeros_like, nn.unbox(md.init(jax.random.PRNGKey(0), seq)["cache"]))
  for alpha in (1.0, 3.0):
    full = jax.jit(m.apply)({"params": p}, seq, logit_scale=alpha)
    logits, upd = step({"params": p, "cache": cache0}, seq[:, :7],
                       jnp.broadcast_to(jnp.arange(7), (2, 7)), alpha)
    np.testing.assert_allclose(logits, full[:, :7], atol=2e-5)
    cache = upd["cache"]
    for t in range(7, 12):
      logits, upd = step({"params": p, "cache": cache}, seq[:, t:t + 1], jnp.full((2, 1), t), alpha)
      cache = upd["cache"]
      np.testing.assert_allclose(logits[:, 0], full[:, t], atol=2e-5)


def test_config_errors():
  with pytest.raises(base.ConfigError, match="model.pos"):
    modelzoo.check(dataclasses.replace(TINY, pos="learned"))
  with pytest.raises(base.ConfigError, match="model.mix_up"):
    modelzoo.check(dataclasses.replace(TINY, mix_up="kronecker"))
  with pytest.raises(base.ConfigError, match="model.mix_v"):
    modelzoo.check(dataclasses.replace(TINY, mix_v="diagonal"))
  with pytest.raises(base.ConfigError, match="model.d_ff"):
    modelzoo.check(dataclasses.replace(TINY, d_ff=63))


def test_tiny_run_loss_drops_and_amplification_eval(tmp_path, corpus, capsys):
  over = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
          "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "train.warmup_steps=2",
          "train.steps=40", "train.lr=3e-3", "train.eval_every=40", "train.eval_steps=2",
          "train.log_every=5", "model.mix_up=independent", "data.source=text", f"data.path={corpus}"]
  assert entry.train(["--config", "configs/dual_stream_tiny_kronecker.py", "--workdir", str(tmp_path),
                     *over]) == 0
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert losses[-1] < 0.6 * losses[0], losses
  capsys.readouterr()
  assert entry.eval_(["--workdir", str(tmp_path), "--logit-scale", "1", "4"]) == 0
  out = json.loads(capsys.readouterr().out)
  r1, r4 = out["logit_scale"]["1.0"], out["logit_scale"]["4.0"]
  assert r1["rel_loss_increase"] == 0.0 and r4["rel_loss_increase"] != 0.0
  assert np.isfinite(r4["eval_loss"])


@pytest.mark.parametrize("over,want_v,want_o", [
    ({}, ("identity", 0.02), ("normal", 0.005)),                   # the default
    ({"kron_init": "normal"}, ("normal", 0.02), ("normal", 0.005)),  # the precursor's
    ({"kron_init": "identity"}, ("identity", 0.02), ("identity", 0.005)),
    ({"kron_init_v": "identity", "kron_init_o": "normal", "kron_std_o": 0.1},
     ("identity", 0.02), ("normal", 0.1)),
    ({"kron_init": "identity", "kron_init_o": "normal", "kron_std_v": 0.05},
     ("identity", 0.05), ("normal", 0.005))])
def test_kronecker_inits_of_m_v_and_m_o(over, want_v, want_o):
  """M_V and M_O start at I + N(0, std^2) (identity) or N(0, std^2) (normal), each with its own
  setting (default M_V identity, M_O normal); kron_init sets both, the std defaults to init_std (M_V) and
  init_std/sqrt(2L) (M_O, 0.005 at L = 8). Sixteen heads, eight layers: 2048 draws per map."""
  cfg = base.model_config("dual_stream", vocab_size=8, d_model=32, n_layers=8, n_heads=16, d_ff=32,
                          max_len=8, mix_v="kronecker", mix_o="kronecker", **over)
  modelzoo.check(cfg)
  assert (cfg.kron_init_v_resolved, cfg.kron_init_o_resolved) == (want_v, want_o)
  p = jax.jit(lambda: init(cfg, T=4))()["layers"]["attn"]
  for (kind, std), m in ((want_v, p["value"]["mix"]), (want_o, p["out"]["mix"])):
    assert m.shape == (8, 16, 16)
    noise = np.asarray(m) - (np.eye(16) if kind == "identity" else 0.0)
    assert abs(noise.mean()) < 0.1 * std and abs(noise.std() / std - 1) < 0.1, (kind, std, noise.std())


def test_streams_keep_the_embedding_scale_at_init():
  """The default init (M_V = I, M_O at the output std) and the precursor's (both normal):
  attention's writes to x_t start at the dense model's scale (x_t's RMS stays near the
  embedding's 0.02 through the layers). M_V = M_O = I with CLN_v writes a unit-RMS copy of
  each head per layer: x_t's RMS grows 10x and more (docs/dual_stream.md, "Initialisation")."""
  from modelzoo.dual_stream.init_scale import stream_rms
  cfg = base.model_config("dual_stream", vocab_size=61, d_model=32, n_layers=4, n_heads=4, d_ff=64,
                          max_len=16, mix_v="kronecker", mix_o="kronecker")
  out = {}   # one compile: the forward pass does not depend on the init settings
  for name, c in (("default", cfg), ("normal", dataclasses.replace(cfg, kron_init="normal")),
                  ("identity", dataclasses.replace(cfg, kron_init="identity"))):
    out[name] = stream_rms(cfg, jax.jit(lambda c=c: init(c))(), TOK)[0]
  assert out["default"].max() < 1.5 * out["default"][0], out
  assert out["normal"].max() < 1.5 * out["normal"][0], out
  assert out["identity"][-1] > 10 * out["identity"][0], out


def test_old_config_json_still_loads_and_builds():
  """A run saved before the per-map init fields (kron_init only) and one saved when configs were one
  flat ModelConfig (every family's fields) both load; their Kronecker maps keep kron_init."""
  saved = base.to_dict(base.load("configs/dual_stream_tiny_kronecker.py"))["model"]
  old = {k: v for k, v in saved.items()
         if k not in ("kron_init_v", "kron_init_o", "kron_std_v", "kron_std_o")}
  old["kron_init"] = "identity"
  flat = {**old, "n_kv_heads": 0, "d_head": 0, "mlp": "gelu", "use_bias": False,
          "attention": "softmax", "norm_placement": "pre", "matmul_dtype": "", "d_state": 16}
  for d in (old, flat):
    cfg = base.from_dict({"model": d}).model
    modelzoo.check(cfg)
    assert cfg.kron_init_v_resolved[0] == cfg.kron_init_o_resolved[0] == "identity"
    assert count(cfg) == 691_584
  # saved while both maps defaulted to normal (kron_init "normal", per-map fields ""): as it ran
  cfg = base.from_dict({"model": {**saved, "kron_init": "normal"}}).model
  assert cfg.kron_init_v_resolved[0] == cfg.kron_init_o_resolved[0] == "normal"
  cfg = base.load("configs/dual_stream_tiny_kronecker.py", ["model.kron_init_o=identity",
                                                            "model.kron_std_v=0.1"])
  assert base.from_dict(base.to_dict(cfg)) == cfg
