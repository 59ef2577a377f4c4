"""The train step and loop: loss falls; meshes agree; kill -9 and resume is bitwise exact; eval is right."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import entry
import modelzoo
from configs import base
from layers import sharding
from training import distributed
from training import step as step_lib
from training.checkpoint import Checkpointer

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "train.warmup_steps=2",
        "train.eval_every=1000", "train.eval_steps=2", "train.log_every=5"]


def run_train(workdir, corpus, *extra):
  return entry.train(["--config", "configs/quickstart.py", "--workdir", str(workdir), *TINY,
                     "data.source=text", f"data.path={corpus}", *extra])


def metrics(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def test_tiny_run_loss_drops_and_eval_reports(tmp_path, corpus, capsys):
  assert run_train(tmp_path, corpus, "train.steps=40", "train.lr=3e-3", "train.eval_every=40") == 0
  train_rows, eval_rows = metrics(tmp_path)
  assert train_rows[-1]["loss"] < 0.6 * train_rows[0]["loss"], train_rows
  for key in ("step", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu"):
    assert key in train_rows[-1]
  assert eval_rows and eval_rows[-1]["eval_loss"] < 3.0
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 40
  assert list((tmp_path / "tb").iterdir()), "TensorBoard events written"
  capsys.readouterr()
  assert entry.eval_(["--workdir", str(tmp_path), "--sample", "the cat", "--max-new-tokens", "8"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["step"] == 40 and abs(out["eval_loss"] - eval_rows[-1]["eval_loss"]) < 1e-4
  assert out["sample"].startswith("the cat") and len(out["sample"]) > 7


def test_eval_of_a_known_model(tmp_path, corpus, capsys):
  """All-zero parameters give uniform logits: loss ln V, perplexity V, 8 bits per byte."""
  cfg = base.apply_overrides(base.load("configs/quickstart.py", TINY),
                             ["data.source=text", f"data.path={corpus}", "mesh.data=8"])
  (tmp_path / "config.json").write_text(base.to_json(cfg))
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
  model, (tx, _) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  make, rng, _, _ = step_lib.init_state(model, tx, cfg, mesh)
  state = jax.tree.map(jnp.zeros_like, make(rng))
  ck = Checkpointer(tmp_path, 1, 1)
  ck.save(7, state, {}, force=True)
  ck.close()
  assert entry.eval_(["--workdir", str(tmp_path), "--batches", "3"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["step"] == 7
  np.testing.assert_allclose(out["eval_loss"], math.log(256), rtol=1e-6)
  np.testing.assert_allclose(out["eval_ppl"], 256, rtol=1e-5)
  np.testing.assert_allclose(out["eval_bpb"], 8.0, rtol=1e-6)


def losses_on_mesh(sizes, corpus, steps=3, devices=None):
  cfg = base.apply_overrides(base.load("configs/quickstart.py", TINY), [
      "data.source=text", f"data.path={corpus}", "train.grad_accum=2", "train.z_loss=1e-4",
      "model.n_kv_heads=2"])
  mesh = sharding.make_mesh(sizes, devices)
  model, (tx, schedule) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  make, rng, _, state_sh = step_lib.init_state(model, tx, cfg, mesh)
  b_sh = sharding.batch_sharding(mesh)
  with sharding.activate(mesh):
    step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg),
                   in_shardings=(state_sh, b_sh), out_shardings=(state_sh, None))
  rng_np = np.random.default_rng(0)
  state, losses = make(rng), []
  for _ in range(steps):
    x = rng_np.integers(0, 256, (8, 33)).astype(np.int32)
    batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "weights": np.ones((8, 32), np.float32),
             "segment_ids": np.ones((8, 32), np.int32),
             "positions": np.broadcast_to(np.arange(32, dtype=np.int32), (8, 32))}
    state, m = step(state, distributed.to_global(batch, b_sh))
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state.params)


def test_same_losses_and_params_on_every_mesh(corpus):
  ref_losses, ref_params = losses_on_mesh(dict(data=1, fsdp=1, tensor=1), corpus,
                                          devices=jax.devices()[:1])
  for sizes in (dict(data=8, fsdp=1, tensor=1), dict(data=2, fsdp=4, tensor=1),
                dict(data=2, fsdp=2, tensor=2)):
    losses, params = losses_on_mesh(sizes, corpus)
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5, err_msg=str(sizes))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, err_msg=str(sizes)),
                 params, ref_params)
  assert ref_losses[-1] != ref_losses[0]


def final_params(workdir):
  ck = Checkpointer(workdir, 1, 10)
  step = ck.steps()[-1]
  restored = ck.mngr.restore(step, args=ocp.args.Composite(  # as saved: enough to compare bits
      state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  ck.close()
  return step, restored["state"]["params"]


def test_kill_9_and_resume_is_bitwise_identical(tmp_path, corpus):
  cmd = [sys.executable, "train.py", "--config", "configs/quickstart.py", *TINY, "data.source=text",
         f"data.path={corpus}", "train.steps=60", "ckpt.every=10", "ckpt.keep=10"]
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  ref, broken = tmp_path / "ref", tmp_path / "broken"
  subprocess.run(cmd + ["--workdir", str(ref)], check=True, env=env, capture_output=True, timeout=600)
  p = subprocess.Popen(cmd + ["--workdir", str(broken)], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and not (broken / "checkpoints" / "20").exists() and p.poll() is None:
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait()
  r = subprocess.run(cmd + ["--workdir", str(broken)], env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resumed from step" in r.stdout
  (s1, p1), (s2, p2) = final_params(ref), final_params(broken)
  assert s1 == s2 == 60
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), p1, p2)
  assert [r["loss"] for r in metrics(ref)[0]][-1] == [r["loss"] for r in metrics(broken)[0]][-1]


def test_sigterm_saves_and_exits_cleanly(tmp_path, corpus):
  cmd = [sys.executable, "train.py", "--config", "configs/quickstart.py", "--workdir", str(tmp_path),
         *TINY, "data.source=text", f"data.path={corpus}", "train.steps=100000", "ckpt.every=100000"]
  p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
    time.sleep(0.1)
  p.send_signal(signal.SIGTERM)
  out, _ = p.communicate(timeout=300)
  assert p.returncode == 0, out[-2000:]
  step, _ = final_params(tmp_path)
  assert step >= 1 and f"checkpoint at step {step} saved" in out


def test_workdir_of_another_run_is_refused(tmp_path, corpus, capsys):
  assert run_train(tmp_path, corpus, "train.steps=2", "train.warmup_steps=1") == 0
  capsys.readouterr()
  assert run_train(tmp_path, corpus, "train.steps=2", "train.warmup_steps=1",
                   "model.d_model=64") == 2
  err = capsys.readouterr().err
  assert err.startswith("error: workdir") and "model.d_model" in err, err
