"""benchmarks/eval_lengths.py: a task run's accuracy at several sequence lengths (configs/repro_mamba.py's
induction extrapolation), checked against the run's own final eval row and against an independent
computation (the task's val examples drawn directly by data/tasks.py, the restored model's argmax)."""
import json

import entry
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modelzoo
from configs.base import ConfigError
from data import tasks
from interop import params_io
from layers import sharding

T = 16
TINY = ["model.d_model=16", "model.n_layers=1", "model.d_state=4", "model.ssm_chunk=8",
        f"model.max_len={T}", f"data.seq_len={T}", "train.batch_size=8", "train.warmup_steps=1",
        "train.log_every=2", "train.eval_steps=2", "train.steps=4", "train.eval_every=4",
        "train.lr=1e-2", "mesh.data=8"]


@pytest.fixture(scope="module")
def induction_run(tmp_path_factory):
  """configs/induction_tiny.py cut down: 4 steps through train.py, one eval at the end."""
  workdir = tmp_path_factory.mktemp("induction")
  assert entry.train(["--config", "configs/induction_tiny.py", "--workdir", workdir, *TINY]) == 0
  return workdir


def report(workdir, *argv, capsys):
  capsys.readouterr()
  assert entry.run("benchmarks/eval_lengths.py", ["--workdir", workdir, *argv]) == 0
  return json.loads(capsys.readouterr().out)


def direct(workdir, length, n):
  """Accuracy and loss over the answer positions of val examples 0..n-1 (seed 0) of the run's task
  at `length`, drawn by data/tasks.py and scored by the restored model's logits here."""
  cfg, _, params = params_io.restore_params(workdir)
  task = tasks.InductionHeads(vocab_size=cfg.data.vocab_size, seq_len=length)
  b = tasks.batch(task, 0, "val", 0, n)
  model = modelzoo.build(cfg.model)
  mesh = jax.tree.leaves(params)[0].sharding.mesh
  with sharding.activate(mesh):
    logits = np.asarray(jax.jit(lambda p, x, pos: model.apply({"params": p}, x, pos))(
        params, jnp.asarray(b["inputs"]), jnp.asarray(b["positions"])), np.float64)
  w = b["weights"] > 0
  right = logits.argmax(-1) == b["targets"]
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, b["targets"][..., None], -1)[..., 0]
  return right[w].mean(), nll[w].mean(), w.sum()


def test_accuracy_at_the_train_length_is_the_runs_final_eval(induction_run, capsys):
  out = report(induction_run, "--lengths", T, capsys=capsys)
  rows = [json.loads(line) for line in (induction_run / "metrics.jsonl").read_text().splitlines()]
  final = [r for r in rows if "eval_loss" in r][-1]
  assert out["step"] == final["step"] == 4
  assert out["train_seq_len"] == T and out["batches"] == 2 and out["batch_size"] == 8
  got = out["lengths"][str(T)]
  assert got["examples"] == 16
  for k in ("eval_loss", "eval_accuracy", "eval_seq_accuracy"):
    np.testing.assert_allclose(got[k], final[k], rtol=1e-5, atol=1e-6)


def test_longer_lengths_match_an_independent_computation(induction_run, capsys):
  lengths = (T, 2 * T, 5 * T)                 # 5T = 80: not a multiple of the scan chunk (8)
  out = report(induction_run, "--lengths", *lengths, "--batches", 3, capsys=capsys)
  assert list(out["lengths"]) == [str(t) for t in lengths]
  for t in lengths:
    acc, nll, n = direct(induction_run, t, 3 * 8)
    got = out["lengths"][str(t)]
    assert got["examples"] == n == 24
    np.testing.assert_allclose(got["eval_accuracy"], acc, atol=1e-6)
    np.testing.assert_allclose(got["eval_seq_accuracy"], acc, atol=1e-6)   # one answer per row
    np.testing.assert_allclose(got["eval_loss"], nll, rtol=1e-4)


def test_bad_arguments_are_refused(induction_run, capsys):
  from benchmarks import eval_lengths
  from training import workdir as workdir_lib
  capsys.readouterr()
  assert entry.run("benchmarks/eval_lengths.py", ["--workdir", induction_run, "--lengths", "0"]) == 2
  assert "--lengths" in capsys.readouterr().err
  cfg = workdir_lib.read_config(induction_run)
  with pytest.raises(ConfigError, match="seq_len=2"):          # induction needs T >= 3
    eval_lengths.at_length(cfg, 2, 8)
