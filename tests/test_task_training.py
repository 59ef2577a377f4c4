"""Procedural tasks (data/tasks.py) wired into training: a task source through train.py and eval.py
(accuracy in metrics.jsonl, no tokenizer), resumable task batches, the regression's real read-in,
MSE loss and per-context curves, and the one-line config errors."""
import json

import entry
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import modelzoo
from configs import base
from configs.base import ConfigError
from data import pipeline, sources, tasks
from layers import sharding
from modelzoo import common
from training import evaluate
from training import step as step_lib

MQAR = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_len=32", "data.seq_len=32",
        "data.num_pairs=4", "train.batch_size=8", "train.warmup_steps=1", "train.log_every=2",
        "train.eval_steps=2", "mesh.data=8"]
REG = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64", "model.d_in=4",
       "model.max_len=16", "data.d=3", "data.n=8", "data.seq_len=16", "train.batch_size=8",
       "mesh.data=8"]


@pytest.fixture(scope="module")
def mqar_run(tmp_path_factory):
  """configs/mqar_tiny.py cut down, 4 steps through train.py (one eval at the end)."""
  workdir = tmp_path_factory.mktemp("mqar")
  assert entry.train(["--config", "configs/mqar_tiny.py", "--workdir", workdir, *MQAR,
                      "train.steps=4", "train.eval_every=4"]) == 0
  return workdir


def test_task_source_trains_through_train_py_with_accuracy(mqar_run, capsys):
  rows = [json.loads(line) for line in (mqar_run / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "loss" in r]
  eval_rows = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 4]
  for r in train_rows:
    assert 0.0 <= r["seq_accuracy"] <= r["accuracy"] <= 1.0
  assert set(eval_rows[-1]) == {"step", "eval_loss", "eval_accuracy", "eval_seq_accuracy"}
  assert not (mqar_run / "tokenizer.json").exists()          # a task has no tokenizer
  capsys.readouterr()
  assert entry.eval_(["--workdir", mqar_run]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["step"] == 4
  np.testing.assert_allclose(out["eval_accuracy"], eval_rows[-1]["eval_accuracy"], atol=1e-6)


def test_text_sources_keep_their_metric_keys():
  cfg = base.load("configs/quickstart.py")
  assert not step_lib.measures_accuracy(cfg)
  model = modelzoo.build(base.load("configs/quickstart.py", ["model.d_model=32", "model.d_ff=64",
                                                              "model.n_layers=1"]).model)
  tokens = jnp.zeros((2, 8), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  batch = {"inputs": tokens, "targets": tokens, "weights": jnp.ones((2, 8)),
           "positions": jnp.broadcast_to(jnp.arange(8), (2, 8)), "segment_ids": jnp.ones((2, 8), jnp.int32)}
  assert step_lib.loss_sums(model, params, batch)[3] == {}


def test_task_batches_resume_exactly_and_split_over_processes():
  cfg = base.load("configs/mqar_tiny.py").data

  def it(**kw):
    return pipeline.build_dataset(cfg, None, "train", batch_size=4, seed=3, **kw)
  a = it()
  first = [next(a) for _ in range(5)]
  b = it()
  for _ in range(2):
    next(b)
  state = b.get_state()
  c = it()
  c.set_state(json.loads(json.dumps(state)))          # as a checkpoint stores it
  for want in first[2:]:
    got = next(c)
    assert all(np.array_equal(got[k], want[k]) for k in want)
  assert set(first[0]) == set(tasks.TOKEN_KEYS)
  np.testing.assert_array_equal(first[1]["inputs"], tasks.batch(sources.task(cfg), 3, "train", 4, 4)["inputs"])
  # Two processes of 2 rows each make the single process's batch of 4, rows in process order.
  halves = [next(pipeline.build_dataset(cfg, None, "train", batch_size=2, seed=3, process_index=p,
                                        process_count=2)) for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate([h["targets"] for h in halves]), first[0]["targets"])
  # val: seed given, fixed, at data.eval_seq_len if set.
  val = next(pipeline.build_dataset(base.apply_overrides(base.Config(data=cfg), ["data.eval_seq_len=96"]).data,
                                    None, "val", batch_size=2, seed=0))
  assert val["inputs"].shape == (2, 96)


def regression_setup():
  cfg = base.load("configs/icl_regression_tiny.py", REG)
  model = modelzoo.build(cfg.model)
  params = nn.unbox(model.init(jax.random.PRNGKey(1), common.dummy_inputs(cfg.model, 16)))["params"]
  batch = {k: v for k, v in tasks.batch(sources.task(cfg.data), 0, "val", 0, 8).items()
           if k in tasks.TOKEN_KEYS}
  return cfg, model, params, batch


def test_real_read_in_and_mse_loss():
  cfg, model, params, batch = regression_setup()
  assert batch["inputs"].shape == (8, 16, 4) and batch["inputs"].dtype == np.float32
  y_hat = np.asarray(model.apply({"params": params}, batch["inputs"], batch["positions"]))
  assert y_hat.shape == (8, 16)
  assert set(params) >= {"read_in", "read_out"} and "embed" not in params
  sq, z, w, extra = step_lib.loss_sums(model, params, batch, z_loss=1.0)
  want = (batch["weights"] * (y_hat - batch["targets"]) ** 2).sum() / batch["weights"].sum()
  np.testing.assert_allclose(float(sq) / float(w), want, rtol=1e-5)
  assert float(z) == 0.0 and extra == {} and float(w) == 8 * 8   # weight on every x_i row
  spec = step_lib.batch_spec(cfg, None)
  assert spec["inputs"].shape == (8, 16, 4) and spec["targets"].dtype == jnp.float32


def test_regression_curves_beside_the_baselines():
  cfg, model, params, _ = regression_setup()
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
  b_sh = sharding.batch_sharding(mesh)
  val = evaluate.val_batches(cfg, None, 2)
  out = evaluate.regression_curves(cfg, model, params, val, b_sh, mesh)
  assert out["k"] == list(range(8)) and out["examples"] == 16
  for name in ("model", "ols", "ridge", "gd", "zero"):
    assert len(out[name]) == 8
  assert max(out["ols"][3:]) < 1e-6 < out["zero"][3]     # d=3: least squares is exact from k = d on
  np.testing.assert_allclose(np.mean(out["model"]), out["eval_mse"], rtol=1e-5)


@pytest.mark.parametrize("config, overrides, says", [
    ("mqar", ["data.num_pairs=40"], "data.num_pairs=40"),           # the task's own check
    ("mqar", ["data.num_tokens=3"], "data.num_tokens=3 is not a knob of data.source='mqar'"),
    ("mqar", ["model.vocab_size=32"], "model.vocab_size=32 is smaller than data.source='mqar'"),
    ("mqar", ["model.pos=learned", "data.eval_seq_len=64"], "data.eval_seq_len=64 exceeds model.max_len=32"),
    ("icl_regression", ["model.d_in=4"], "set model.d_in=3"),      # d = 2
    ("icl_regression", ["data.seq_len=8"], "data.seq_len=8 must equal linear_regression's length 16"),
    ("icl_regression", ["data.sigma=-1"], "data.sigma=-1.0 must be >= 0"),
])
def test_one_line_config_errors(config, overrides, says):
  cfg = base.load(f"configs/{config}_tiny.py", overrides)
  with pytest.raises(ConfigError) as e:
    base.validate(cfg, 1)
  assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_bad_vocab_is_refused_before_compiling(tmp_path, capsys):
  assert entry.train(["--config", "configs/mqar_tiny.py", "--workdir", tmp_path / "r",
                      "model.vocab_size=16"]) == 2
  assert "model.vocab_size=16" in capsys.readouterr().err
  assert not (tmp_path / "r").exists()
