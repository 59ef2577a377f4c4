"""Multi-process training on one machine: 2 processes on localhost (jax.distributed, gloo CPU
collectives), each with 4 forced host devices, against 1 process with 8; preemption of one process;
a recurrent-mixer model (Mamba-2) on every mesh; cluster-environment detection."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import modelzoo
from configs import base
from configs.base import ConfigError
from layers import sharding
from training import distributed, evaluate
from training import step as step_lib

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "train.warmup_steps=2",
        "train.eval_steps=2", "train.log_every=1", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(workdir, corpus, n_proc, *extra):
  """n_proc train.py processes (8 / n_proc host devices each), as a cluster would start them."""
  port, procs = free_port(), []
  for i in range(n_proc):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS":
           f"--xla_force_host_platform_device_count={8 // n_proc} --xla_backend_optimization_level=0"}
    dist = [] if n_proc == 1 else ["--coordinator", f"localhost:{port}", "--num-processes",
                                   str(n_proc), "--process-id", str(i)]
    log = open(Path(workdir).parent / f"{Path(workdir).name}.p{i}.log", "w")
    procs.append((subprocess.Popen(
        [sys.executable, "train.py", "--config", "configs/quickstart.py", "--workdir", str(workdir),
         *TINY, "data.source=text", f"data.path={corpus}", *dist, *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT), log))
  return procs


def wait(procs, timeout=900):
  outs = []
  for p, log in procs:
    p.wait(timeout=timeout)
    log.close()
    outs.append((p.returncode, Path(log.name).read_text()))
  return outs


def losses(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, corpus):
  args = ["train.steps=6", "ckpt.every=3", "train.eval_every=6"]
  ref = wait(launch(tmp_path / "one", corpus, 1, *args))
  two = wait(launch(tmp_path / "two", corpus, 2, *args))
  for rc, out in ref + two:
    assert rc == 0, out[-3000:]
  assert "process 0 of 2 (explicit" in two[0][1] and "done: step 6" in two[0][1]
  assert "config:" not in two[1][1] and "done:" not in two[1][1], "only process 0 logs"
  l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
  assert len(l1) == len(l2) == 6 and l1[-1] < l1[0]
  np.testing.assert_allclose(l2, l1, atol=1e-5)
  # The 2-process checkpoint (written cooperatively) restores here, on one process's 8 devices.
  (_, _, s1, p1, _), (_, _, s2, p2, _) = (evaluate.load_run(tmp_path / d) for d in ("one", "two"))
  assert s1 == s2 == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), jax.device_get(p2),
               jax.device_get(p1))


@pytest.mark.slow
def test_sigterm_to_one_process_stops_all_at_the_same_saved_step(tmp_path, corpus):
  wd = tmp_path / "run"
  procs = launch(wd, corpus, 2, "train.steps=100000", "ckpt.every=100000",
                 "train.eval_every=100000")
  deadline = time.time() + 600
  while time.time() < deadline and len(losses(wd) if (wd / "metrics.jsonl").exists() else []) < 3:
    time.sleep(0.2)
  procs[1][0].send_signal(signal.SIGTERM)      # the preemption notice reaches one host only
  outs = wait(procs)
  for rc, out in outs:
    assert rc == 0, out[-3000:]
  saved = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert len(saved) == 1 and all(f"checkpoint at step {saved[0]} saved" in o for _, o in outs)
  more = wait(launch(wd, corpus, 2, f"train.steps={saved[0] + 2}", "ckpt.every=100000",
                     "train.eval_every=100000"))
  assert all(rc == 0 for rc, _ in more), more[0][1][-3000:]
  assert f"resumed from step {saved[0]}" in more[0][1]


# ---------------------------------------------------------------------------------------------
# Mesh equivalence for a recurrent-mixer model (the decoder's is in test_train.py).

MAMBA2 = ["model.d_model=32", "model.n_layers=2", "model.d_state=16", "model.ssm_head_dim=16",
          "model.ssm_chunk=16", "model.max_len=32", "data.seq_len=32", "train.batch_size=8",
          "train.warmup_steps=2", "train.grad_accum=2"]
DECODER = TINY[:8] + ["train.grad_accum=2", "train.z_loss=1e-4", "model.n_kv_heads=2"]


def mesh_losses(config, overrides, sizes, devices=None, steps=3):
  cfg = base.apply_overrides(base.load(config), overrides)
  modelzoo.check(cfg.model)
  mesh = sharding.make_mesh(sizes, devices)
  model, (tx, schedule) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  make, rng, _, state_sh = step_lib.init_state(model, tx, cfg, mesh)
  b_sh = sharding.batch_sharding(mesh)
  with sharding.activate(mesh):
    step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg),
                   in_shardings=(state_sh, b_sh), out_shardings=(state_sh, None))
  rng_np, state, out = np.random.default_rng(0), make(rng), []
  for _ in range(steps):
    x = rng_np.integers(0, 256, (8, 33)).astype(np.int32)
    batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "weights": np.ones((8, 32), np.float32),
             "segment_ids": np.ones((8, 32), np.int32),
             "positions": np.broadcast_to(np.arange(32, dtype=np.int32), (8, 32))}
    state, m = step(state, distributed.to_global(batch, b_sh))
    out.append(float(m["loss"]))
  return out, jax.device_get(state.params)


def assert_same_on_meshes(config, overrides, meshes):
  ref_l, ref_p = mesh_losses(config, overrides, dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  for sizes in meshes:
    l, p = mesh_losses(config, overrides, sizes)
    np.testing.assert_allclose(l, ref_l, atol=1e-5, err_msg=str(sizes))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, err_msg=str(sizes)),
                 p, ref_p)
  assert ref_l[-1] != ref_l[0]


def test_decoder_pure_fsdp_mesh_equals_one_device():
  """fsdp=8 (test_train.py has data=8, 2x4x1 and 2x2x2)."""
  assert_same_on_meshes("configs/quickstart.py", DECODER, [dict(data=1, fsdp=8, tensor=1)])


@pytest.mark.slow
def test_mamba2_same_losses_and_params_on_every_mesh():
  assert_same_on_meshes("configs/mamba2_tiny.py", MAMBA2, [
      dict(data=8, fsdp=1, tensor=1), dict(data=1, fsdp=8, tensor=1), dict(data=2, fsdp=4, tensor=1),
      dict(data=2, fsdp=2, tensor=2)])


# ---------------------------------------------------------------------------------------------
# How a process learns it is one of several (no JAX calls: pure environment reading).

def test_cluster_environments_are_detected():
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "8",
           "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
  assert distributed.detect(slurm) == "slurm"
  assert distributed.detect({**slurm, "SLURM_NTASKS": "1"}) is None     # one task: one process
  ompi = {"OMPI_MCA_orte_hnp_uri": "123.0;tcp://10.0.0.1:5000", "OMPI_COMM_WORLD_SIZE": "4"}
  assert distributed.detect(ompi) == "open mpi"
  assert distributed.detect({}) is None


@pytest.mark.parametrize("flags, words", [
    (["--num-processes", "2", "--process-id", "0"], ["missing --coordinator"]),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], ["host:port"]),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"],
     ["--process-id=2", "[0, --num-processes=2)"]),
    (["--coordinator", "localhost:1234", "--num-processes", "0", "--process-id", "0"],
     ["--num-processes=0"]),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--distributed", "off"],
     ["--distributed=off"]),
])
def test_bad_launch_flags_fail_before_initialising(flags, words):
  parser = argparse.ArgumentParser()
  distributed.add_args(parser)                     # train.py's multi-process flags
  args = parser.parse_args(flags)
  with pytest.raises(ConfigError) as e:
    distributed.initialize(args)
  for w in words:
    assert w in str(e.value), (w, str(e.value))
