"""Faults: nothing is lost. kill -9 at random moments (incl. mid checkpoint write), corrupt and
truncated checkpoints, a full disk or read-only checkpoint directory, non-finite updates, and a
checkpoint restored onto another mesh. Every comparison is against an uninterrupted run."""
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import entry
from data import pipeline
from training.checkpoint import Checkpointer

# schedule=constant: a run stopped at step s and continued to step n equals one run to n.
TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "train.warmup_steps=2",
        "train.schedule=constant", "train.eval_every=1000", "train.eval_steps=2",
        "train.log_every=1", "ckpt.keep=10"]


def args(workdir, corpus, *extra):
  return ["--config", "configs/quickstart.py", "--workdir", str(workdir), *TINY, "data.source=text",
          f"data.path={corpus}", *extra]


@pytest.fixture(scope="module")
def ref(tmp_path_factory, corpus):
  """An uninterrupted 20-step run with checkpoints every 5 steps (5, 10, 15, 20)."""
  wd = tmp_path_factory.mktemp("ref") / "run"
  assert entry.train(args(wd, corpus, "train.steps=20", "ckpt.every=5")) == 0
  return wd


def saved(workdir, step=None):
  """A checkpoint's train state exactly as written (numpy, for bitwise comparisons)."""
  ck = Checkpointer(workdir, 1, 100)
  step = ck.steps()[-1] if step is None else step
  out = ck.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ck.close()
  return jax.device_get(out["state"])


def assert_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def losses(workdir):
  rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in rows if "loss" in r}


def copy_up_to(ref_dir, dest, last_step):
  """The reference run as it stood when its checkpoint `last_step` was the newest."""
  shutil.copytree(ref_dir, dest)
  for d in (dest / "checkpoints").iterdir():
    if d.name.isdigit() and int(d.name) > last_step:
      shutil.rmtree(d)
  return dest


# ---------------------------------------------------------------------------------------------
# Corrupt checkpoints.

def truncate(step_dir):
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 1:
      os.truncate(f, f.stat().st_size // 2)


def flip_bytes(step_dir):
  """Inverts 16 bytes in the middle of every array data file (sizes unchanged)."""
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      raw = bytearray(f.read_bytes())
      mid = len(raw) // 2
      raw[mid:mid + 16] = bytes(255 - b for b in raw[mid:mid + 16])
      f.write_bytes(bytes(raw))


def stale_arrays(step_dir):
  """Step 10's arrays under step 15's name: every file reads fine, only the checksums disagree."""
  shutil.rmtree(step_dir / "state")
  shutil.copytree(step_dir.parent / "10" / "state", step_dir / "state")


@pytest.mark.parametrize("damage", [truncate, flip_bytes, stale_arrays])
def test_damaged_latest_checkpoint_is_named_set_aside_and_the_previous_one_used(
    ref, corpus, tmp_path, capsys, damage):
  wd = copy_up_to(ref, tmp_path / "run", 15)
  damage(wd / "checkpoints" / "15")
  assert entry.train(args(wd, corpus, "train.steps=20", "ckpt.every=5")) == 0
  out = capsys.readouterr().out
  assert f"checkpoint {wd.absolute() / 'checkpoints' / '15'} could not be restored" in out, out
  assert "resumed from step 10" in out
  assert [p.name.split("-")[0] for p in (wd / "checkpoints_corrupt").iterdir()] == ["15"]
  assert_equal(saved(wd, 20)["params"], saved(ref, 20)["params"])   # steps 11..20 redone exactly


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(ref, corpus, tmp_path, capsys):
  wd = copy_up_to(ref, tmp_path / "run", 10)
  truncate(wd / "checkpoints" / "5")
  flip_bytes(wd / "checkpoints" / "10")
  assert entry.train(args(wd, corpus, "train.steps=20", "ckpt.every=5")) == 1
  err = capsys.readouterr().err
  assert "none of the checkpoints" in err and "Traceback" not in err, err
  assert not list((wd / "checkpoints").glob("[0-9]*")), "bad ones moved aside, nothing trained"


# ---------------------------------------------------------------------------------------------
# Another mesh.

def test_checkpoint_restores_on_another_mesh_and_continues_identically(ref, corpus, tmp_path, capsys):
  wd = copy_up_to(ref, tmp_path / "run", 10)        # written on mesh data=8
  assert entry.train(args(wd, corpus, "train.steps=20", "ckpt.every=5", "mesh.data=2",
                        "mesh.fsdp=2", "mesh.tensor=2")) == 0
  assert "resumed from step 10" in capsys.readouterr().out
  a, b = losses(wd), losses(ref)
  np.testing.assert_allclose([a[s]["loss"] for s in range(11, 21)],
                             [b[s]["loss"] for s in range(11, 21)], atol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5),
               saved(wd, 20)["params"], saved(ref, 20)["params"])


# ---------------------------------------------------------------------------------------------
# Non-finite updates.

class Poisoned:
  """The train iterator with NaN/Inf token weights in chosen batches (1-based step numbers)."""

  def __init__(self, it, poison: dict):
    self.it, self.poison, self.n = it, poison, 0

  def __iter__(self):
    return self

  def __next__(self):
    batch, self.n = dict(next(self.it)), self.n + 1
    if self.n in self.poison:
      batch["weights"] = batch["weights"] * self.poison[self.n]
    return batch

  def get_state(self):
    return self.it.get_state()

  def set_state(self, s):
    self.it.set_state(s)


def test_non_finite_updates_are_skipped_counted_and_too_many_stop_with_state_saved(
    corpus, tmp_path, capsys, monkeypatch):
  # Steps 3, 4 bad (2 <= K=3: skipped); 7..11 bad: the 4th in a row stops the run.
  poison = {3: np.nan, 4: np.inf, **{s: np.nan for s in range(7, 12)}}
  build = pipeline.build_dataset
  monkeypatch.setattr(pipeline, "build_dataset", lambda cfg, tok, split, **kw: (
      Poisoned(build(cfg, tok, split, **kw), poison) if split == "train"
      else build(cfg, tok, split, **kw)))
  wd = tmp_path / "run"
  assert entry.train(args(wd, corpus, "train.steps=20", "ckpt.every=2", "train.max_bad_steps=3")) == 3
  err = capsys.readouterr().err
  stop_dir = wd.absolute() / "checkpoints" / "11"
  assert "4 non-finite updates in a row (steps 7..10)" in err and str(stop_dir) in err, err
  assert "Traceback" not in err
  rows = losses(wd)
  assert [s for s, r in rows.items() if r["skipped"]] == [3, 4, 7, 8, 9, 10]
  assert not np.isfinite(rows[3]["loss"]) and rows[10]["skipped_total"] == 6
  s2, s4, s6, s11 = (saved(wd, s) for s in (2, 4, 6, 11))
  assert_equal(s4["params"], s2["params"])                 # skipped: parameters and Adam moments kept
  assert_equal(s4["opt_state"], s2["opt_state"])
  assert not np.array_equal(s6["params"]["embed"]["embedding"], s4["params"]["embed"]["embedding"])
  assert_equal(s11["params"], s6["params"])                # the saved state is the last good one
  assert int(s11["skipped"]) == 7 and int(s11["step"]) == 11


# ---------------------------------------------------------------------------------------------
# Failing writes.

@contextlib.contextmanager
def read_only(path: Path):
  """Makes a directory unwritable, even for root (a read-only bind mount) where possible."""
  if os.geteuid() != 0:
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
      yield "Permission denied"
    finally:
      path.chmod(mode)
    return
  r = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
  if r.returncode:
    pytest.skip(f"root without CAP_SYS_ADMIN cannot make {path} read-only: {r.stderr!r}")
  try:
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
    yield "Read-only file system"
  finally:
    subprocess.run(["umount", str(path)], check=True)


def test_read_only_checkpoint_dir_is_a_clear_error_and_the_last_checkpoint_survives(
    ref, corpus, tmp_path, capsys):
  wd = copy_up_to(ref, tmp_path / "run", 10)
  with read_only(wd / "checkpoints") as reason:
    rc = entry.train(args(wd, corpus, "train.steps=20", "ckpt.every=5"))
  err = capsys.readouterr().err
  assert rc == 1 and "could not write checkpoint step 15" in err and reason in err, err
  assert f"the previous checkpoint {wd.absolute() / 'checkpoints' / '10'} is intact" in err
  assert "Traceback" not in err
  assert_equal(saved(wd, 10)["params"], saved(ref, 10)["params"])


def test_full_disk_while_saving_is_a_clear_error_and_the_last_checkpoint_survives(
    ref, corpus, tmp_path):
  """A per-file size limit (RLIMIT_FSIZE, any user): writes past it fail with EFBIG as a full disk
  fails with ENOSPC; the limit lets logs through but not a checkpoint's array file."""
  wd = copy_up_to(ref, tmp_path / "run", 10)
  limit = 24 * 1024
  assert max(f.stat().st_size for f in (wd / "checkpoints" / "10").rglob("*") if f.is_file()) > limit
  for f in wd.rglob("*"):       # the copied logs start small: they may grow to the limit
    if f.is_file() and f.stat().st_size > limit // 2 and "checkpoints" not in f.parts:
      f.write_bytes(b"")
  limited = ("import resource, os, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
             f"({limit}, {limit})); os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
  r = subprocess.run([sys.executable, "-c", limited, "train.py",
                      *args(wd, corpus, "train.steps=20", "ckpt.every=5")],
                     capture_output=True, text=True, timeout=900)
  assert r.returncode == 1, r.stderr[-3000:]
  assert "could not write checkpoint step 15" in r.stderr and "File too large" in r.stderr, r.stderr
  assert "Traceback" not in r.stderr
  assert_equal(saved(wd, 10)["params"], saved(ref, 10)["params"])


# ---------------------------------------------------------------------------------------------
# kill -9.

@pytest.mark.slow
def test_kill_9_at_random_moments_and_mid_write_then_rerun_is_bitwise_identical(tmp_path, corpus):
  """ckpt.keep=1: the only complete checkpoint must survive a kill while the next one is written."""
  seed = int(time.time())
  rng = random.Random(seed)
  cmd = [sys.executable, "train.py", *args("WD", corpus, "train.steps=40", "ckpt.every=5",
                                           "ckpt.keep=1", "ckpt.async_save=true")]
  run = lambda wd: [str(wd) if a == "WD" else a for a in cmd]
  ref, wd = tmp_path / "ref", tmp_path / "broken"
  subprocess.run(run(ref), check=True, capture_output=True, timeout=900)

  def last_step():
    f = wd / "metrics.jsonl"
    rows = f.read_text().splitlines() if f.exists() else []
    return json.loads(rows[-1])["step"] if rows else 0

  def complete():
    return sorted(int(p.name) for p in (wd / "checkpoints").glob("[0-9]*") if p.name.isdigit()) \
        if (wd / "checkpoints").exists() else []

  for what in ("step", "mid-write", "step"):
    start = (complete() or [0])[-1]
    target = rng.randint(start + 2, 37)
    stale = set((wd / "checkpoints").glob("*tmp*")) if (wd / "checkpoints").exists() else set()
    p = subprocess.Popen(run(wd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, hit = time.time() + 600, None
    while time.time() < deadline and p.poll() is None and hit is None:
      if what == "step" and last_step() >= target and complete():   # a save to lose exists
        hit = f"after step {last_step()}"
      elif what == "mid-write" and (tmp := set((wd / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
                                    - stale):
        hit = f"writing {[q.name for q in tmp]}"
      else:
        time.sleep(0.005)
    before = complete()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert hit, f"seed {seed}: the {what} kill found nothing to interrupt (rc {p.returncode})"
    # The newest complete checkpoint (or a newer one) survives; the first kill waits for one to exist.
    assert before and complete() and complete()[-1] >= before[-1], \
        f"seed {seed}: killed {hit}, had {before}, left {complete()}"
  r = subprocess.run(run(wd), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  assert_equal(saved(wd, 40)["params"], saved(ref, 40)["params"])
  assert_equal(saved(wd, 40)["opt_state"], saved(ref, 40)["opt_state"])
  assert losses(wd)[40]["loss"] == losses(ref)[40]["loss"]
