"""σReparam (layers/sigma_reparam.py): sigma(W) against jnp.linalg.norm(W, 2), the reparametrised
layer against its formula, u and v as their own collection that only the train step's power
iteration moves, resumed bitwise, and folded for eval and export into the same function."""
import json
import shutil

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import entry
import modelzoo
from configs import base
from interop import params_io
from layers import sigma_reparam as sr
from layers.dense import Dense
from tests.test_step import run
from tests.test_faults import saved
from training.workdir import checkpoint_steps

X = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 6))
C = sr.COLLECTION


def test_layer_is_gamma_over_sigma_times_w_with_sigma_exact_at_init():
  d = Dense((5,), ("heads", "kv", "embed"), n_in=2, sigma_reparam=True)   # a 2-axis fan-in
  variables = nn.unbox(d.init(jax.random.PRNGKey(1), X))
  p, uv = variables["params"], variables[C]
  assert set(p) == {"kernel", "bias", sr.GAMMA} and set(uv) == {"u", "v"}   # u, v: not params
  w = np.asarray(p["kernel"]).reshape(24, 5)
  s = np.linalg.norm(w, 2)
  np.testing.assert_allclose(sr.sigma(jnp.asarray(w), uv["u"].reshape(-1), uv["v"]), s, rtol=1e-5)
  assert uv["u"].shape == (4, 6) and uv["v"].shape == (5,) and float(p[sr.GAMMA]) == 1.0
  p = dict(p, sigma_gamma=jnp.array(2.5))
  want = np.asarray(X).reshape(6, 24) @ (2.5 / s * w) + np.asarray(p["bias"])
  np.testing.assert_allclose(d.apply({"params": p, C: uv}, X).reshape(6, 5), want, atol=1e-5)
  g = jax.grad(lambda q: d.apply({"params": q, C: uv}, X).sum())(p)
  assert np.asarray(g["kernel"]).any() and float(g[sr.GAMMA]) != 0.0
  with pytest.raises(Exception, match=C):         # the collection is needed, never made up
    d.apply({"params": p}, X)


def test_power_iteration_converges_to_the_spectral_norm_on_stacked_layers():
  w = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 2, 5))      # 3 layers of [8] -> [2, 5]
  params = {"l": {"kernel": w, sr.GAMMA: jnp.ones(3)}}
  buffers = {C: {"l": {"u": jnp.ones((3, 8)), "v": jnp.ones((3, 2, 5))}}}
  for _ in range(60):
    buffers = sr.power_iteration(params, buffers)
  uv = buffers[C]["l"]
  for i in range(3):
    wi = w[i].reshape(8, 10)
    got = sr.sigma(wi, uv["u"][i], uv["v"][i].reshape(-1))
    np.testing.assert_allclose(got, jnp.linalg.norm(wi, 2), rtol=1e-4)
  u_svd = sr.init_uv(w[0].reshape(8, 10))[0]         # the SVD's vector, up to sign
  np.testing.assert_allclose(np.abs(u_svd), np.abs(uv["u"][0]), atol=1e-3)
  assert sr.power_iteration(params, {}) == {}        # without σReparam: nothing


def test_train_step_moves_u_v_only_by_one_power_iteration():
  _, s0 = run(["model.sigma_reparam=true"], steps=0, full=True)
  _, s1 = run(["model.sigma_reparam=true"], steps=1, full=True)
  assert not any(k[-1] in ("u", "v") for k in flax.traverse_util.flatten_dict(s1.params))
  f0, f1 = (flax.traverse_util.flatten_dict(s.buffers[C]) for s in (s0, s1))
  us = [k for k in f0 if k[-1] == "u"]
  assert sorted(k[-2] for k in us) == ["key", "out", "query", "value", "wi", "wo"]   # scanned
  p1 = flax.traverse_util.flatten_dict(s1.params)
  for k in us:
    mod = k[:-1]
    want = sr.power_iteration({"a": {"kernel": p1[mod + ("kernel",)],
                                     sr.GAMMA: p1[mod + (sr.GAMMA,)]}},
                              {C: {"a": {"u": f0[k], "v": f0[mod + ("v",)]}}})[C]["a"]
    np.testing.assert_allclose(f1[k], want["u"], atol=1e-6)
    np.testing.assert_allclose(f1[mod + ("v",)], want["v"], atol=1e-6)
    assert f1[k].shape[0] == 2 and not np.array_equal(f1[k], f0[k])  # [layers, ...]; W moved


def test_fold_is_the_same_function_without_the_collection():
  cfg = base.load("configs/quickstart.py", ["model.d_model=32", "model.n_layers=2",
                                            "model.n_heads=4", "model.d_ff=64",
                                            "model.sigma_reparam=true"])
  model = modelzoo.build(cfg.model)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16)), jnp.int32)
  v = nn.unbox(model.init(jax.random.PRNGKey(0), x))
  p = jax.tree.map(lambda a: a * 1.3, v["params"])         # W moved away from u, v's SVD
  buffers = {C: v[C]}
  want = model.apply({"params": p, **buffers}, x)
  plain = params_io.served(cfg).model
  assert not plain.sigma_reparam
  got = modelzoo.build(plain).apply({"params": sr.fold(p, buffers)}, x)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


TINY_RUN = ["--config", "configs/quickstart.py", "model.d_model=32", "model.n_layers=2",
            "model.n_heads=4", "model.d_ff=64", "model.max_len=32", "data.seq_len=32",
            "train.batch_size=8", "mesh.data=-1", "model.sigma_reparam=true", "train.steps=10",
            "train.warmup_steps=2",
            "ckpt.every=5", "ckpt.keep=10", "train.eval_steps=2", "data.source=text"]


def test_u_v_checkpoint_and_resume_bitwise(tmp_path, corpus, capsys):
  """u and v are state the run carries: a σReparam run resumed from its step-5 checkpoint ends
  at step 10 with the same parameters and u, v, bit for bit, as one that never stopped."""
  argv = [*TINY_RUN, f"data.path={corpus}"]
  ref, resumed = tmp_path / "ref", tmp_path / "resumed"
  assert entry.train([*argv, "--workdir", str(ref)]) == 0
  shutil.copytree(ref, resumed)
  shutil.rmtree(resumed / "checkpoints" / "10")           # as if it had stopped after step 5
  capsys.readouterr()
  assert entry.train([*argv, "--workdir", str(resumed)]) == 0
  assert "resumed from step 5" in capsys.readouterr().out
  assert checkpoint_steps(ref)[-1] == checkpoint_steps(resumed)[-1] == 10
  a, b = saved(ref), saved(resumed)
  names = ["/".join(k) for k in flax.traverse_util.flatten_dict(a["buffers"])]
  assert names and all(n.startswith(C + "/") and n[-1] in "uv" for n in names)
  jax.tree.map(np.testing.assert_array_equal, (a["params"], a["buffers"]),
               (b["params"], b["buffers"]))


def test_eval_and_exports_read_the_folded_model(tmp_path, corpus, capsys):
  """eval.py gives the loss the run's own last eval gave; safetensors, StableHLO and HF exports
  carry the folded kernels (sigma_reparam=false in their config): the same logits."""
  wd = tmp_path / "run"
  assert entry.train([*TINY_RUN, f"data.path={corpus}", "--workdir", str(wd)]) == 0
  last = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  trained = [r["eval_loss"] for r in last if "eval_loss" in r][-1]
  capsys.readouterr()
  assert entry.eval_(["--workdir", str(wd), "--batches", "2"]) == 0
  out = capsys.readouterr().out
  got = json.loads(out[out.index("{"):])
  np.testing.assert_allclose(got["eval_loss"], trained, rtol=1e-6)
  assert entry.export(["--workdir", str(wd), "--format", "safetensors",
                       "--out", str(tmp_path / "st")]) == 0
  cfg, flat = params_io.load_safetensors(tmp_path / "st")
  assert not cfg.model.sigma_reparam
  st = saved(wd)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16)), jnp.int32)
  run_cfg = base.apply_overrides(cfg, ["model.sigma_reparam=true"])
  want = modelzoo.build(run_cfg.model).apply({"params": st["params"], **st["buffers"]}, x)
  np.testing.assert_allclose(modelzoo.build(cfg.model).apply({"params": flat}, x), want,
                             atol=1e-5, rtol=0)
  assert entry.export(["--workdir", str(wd), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
