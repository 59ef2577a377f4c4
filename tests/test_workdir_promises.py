"""Nothing lost, nothing silent (issue 20), for a run's directory and its exports: each test is
named by the promise it checks. A refused command leaves the workdir byte for byte as it was;
--check writes nothing; an export never overwrites and never writes into the run, and is atomic;
train.py does not silently start over when checkpoints were set aside; Ctrl-C and signals that
come before the first compile end in a saved step (or nothing to save) and one line."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import entry
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "train.warmup_steps=2",
        "train.steps=2", "train.eval_every=1000", "train.eval_steps=2", "train.log_every=1"]


def train_argv(workdir, corpus, *extra):
  return ["--config", "configs/quickstart.py", "--workdir", str(workdir), *TINY,
          "data.source=text", f"data.path={corpus}", *extra]


def train(capsys, workdir, corpus, *extra):
  rc = entry.train(train_argv(workdir, corpus, *extra))
  out, err = capsys.readouterr()
  return rc, out, err


def export(capsys, *argv):
  rc = entry.export(list(map(str, argv)))
  return rc, capsys.readouterr().err


def tree(d: Path):
  """Every name under `d` with its bytes (None for a folder); None if `d` does not exist."""
  if not d.exists():
    return None
  return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else None
          for p in sorted(d.rglob("*"))}


def one_line(err: str, start: str) -> bool:
  return err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus):
  """A finished 2-step run (config.json, tokenizer, a checkpoint at step 2); tests copy it."""
  wd = tmp_path_factory.mktemp("runs") / "run"
  assert entry.train(train_argv(wd, corpus)) == 0
  assert (wd / "checkpoints" / "2").is_dir()
  return wd


def copy(run, tmp_path) -> Path:
  return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def test_a_refused_run_never_changes_the_workdir(run, corpus, tmp_path, capsys):
  # A typo'd data.path claims nothing: the corrected command then trains in that workdir.
  wd = tmp_path / "new"
  rc, _, err = train(capsys, wd, corpus + ".typo")
  assert rc == 2 and "does not exist" in err, err
  assert not wd.exists()
  rc, _, err = train(capsys, wd, corpus)
  assert rc == 0, err
  assert (wd / "checkpoints" / "2").is_dir()
  # A vocabulary refusal writes neither config.json nor the tokenizer.
  rc, _, err = train(capsys, tmp_path / "vocab", corpus, "model.vocab_size=100")
  assert rc == 2 and "model.vocab_size=100" in err and not (tmp_path / "vocab").exists()
  # Checkpoints of another model (copied in without their config.json): refused, and the
  # workdir is exactly as it was (no config.json of the refused model that then locks it).
  other = tmp_path / "copied"
  shutil.copytree(run / "checkpoints", other / "checkpoints")
  before = tree(other)
  rc, _, err = train(capsys, other, corpus, "model.d_model=64")
  assert rc == 2 and "was written for another model" in err, err
  assert tree(other) == before
  # Another run's workdir: refused, unchanged.
  before = tree(wd)
  rc, _, err = train(capsys, wd, corpus, "model.d_model=64", "train.steps=3")
  assert rc == 2 and "holds another run" in err and tree(wd) == before, err
  # A checkpoint refused as unverified (its checksums lost): config.json keeps train.steps=2.
  shutil.rmtree(wd / "checkpoints" / "2" / "checksum")
  before = tree(wd)
  rc, _, err = train(capsys, wd, corpus, "train.steps=3")
  assert rc == 1 and "--allow-unverified" in err and tree(wd) == before, err


def test_check_writes_nothing(run, corpus, tmp_path, capsys):
  wd = tmp_path / "fresh"
  rc, out, err = train(capsys, wd, corpus, "--check")
  assert rc == 0 and "check passed" in out, err
  assert not wd.exists()
  wd = copy(run, tmp_path)
  before = tree(wd)
  rc, out, err = train(capsys, wd, corpus, "--check", "train.steps=7", "train.lr=1e-3")
  assert rc == 0 and "and 1 checkpoints" in out, err
  assert tree(wd) == before


def test_export_never_overwrites_and_never_writes_into_the_run(run, tmp_path, capsys):
  wd = copy(run, tmp_path)
  before = tree(wd)
  link = tmp_path / "link"
  link.symlink_to(wd)
  args = ["--workdir", wd, "--format", "safetensors", "--out"]
  for out, where in ((wd, "is"), (wd / "export", "is inside"), (tmp_path, "contains"),
                     (link, "is"), (wd / ".." / "run", "is")):
    for force in ([], ["--force"]):                       # not even with --force
      rc, err = export(capsys, *args, out, *force)
      assert rc == 2 and one_line(err, f"error: --out {out} {where} the run's --workdir"), err
      assert tree(wd) == before
  full = tmp_path / "full"
  full.mkdir()
  (full / "config.json").write_text("{}")
  rc, err = export(capsys, *args, full)
  assert rc == 2 and one_line(err, f"error: --out {full} is not empty; pass --force"), err
  assert tree(full) == {"config.json": b"{}"}
  assert export(capsys, *args, full, "--force")[0] == 0           # replaced, nothing of it kept
  assert sorted(tree(full)) == ["config.json", "model.safetensors", "tokenizer.json"]
  assert json.loads((full / "config.json").read_text())["model"]["d_model"] == 32
  (tmp_path / "empty").mkdir()
  assert export(capsys, *args, tmp_path / "empty")[0] == 0
  # --import never writes over a run.
  rc, err = export(capsys, "--import", full, "--workdir", wd)
  assert rc == 2 and one_line(err, f"error: --workdir {wd} is not a new or empty folder"), err
  assert tree(wd) == before
  assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_export_is_atomic(run, tmp_path, capsys, monkeypatch):
  """The disk fills up halfway through the weights: --out is as it was, no temp folder left."""
  from safetensors import numpy as st_np

  def full_disk(tensors, path, metadata=None):
    Path(path).write_bytes(b"half a file")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
  monkeypatch.setattr(st_np, "save_file", full_disk)
  out = tmp_path / "exports" / "x"
  args = ["--workdir", run, "--format", "safetensors", "--out"]
  rc, err = export(capsys, *args, out)
  assert rc == 2 and one_line(err, f"error: --out {out} could not be written (No space left"), err
  assert not out.exists() and not list(out.parent.iterdir())
  old = tmp_path / "exports" / "old"
  old.mkdir()
  (old / "keep.txt").write_text("an earlier export")
  rc, err = export(capsys, *args, old, "--force")
  assert rc == 2 and tree(old) == {"keep.txt": b"an earlier export"}, err
  assert [p.name for p in out.parent.iterdir()] == ["old"]


def test_train_refuses_a_silent_fresh_start_after_checkpoints_were_set_aside(run, corpus, tmp_path,
                                                                            capsys):
  wd = copy(run, tmp_path)
  aside = wd / "checkpoints_corrupt"
  aside.mkdir()
  for step in (wd / "checkpoints").iterdir():
    step.rename(aside / f"{step.name}-20260101-000000")
  before = tree(wd)
  rc, out, err = train(capsys, wd, corpus)
  assert rc == 2 and one_line(err, "error: checkpoints of this run were set aside as unreadable "
                                   f"in {aside}; pass --from-scratch"), err
  assert tree(wd) == before and "compiled in" not in out
  rc, out, err = train(capsys, wd, corpus, "--from-scratch")
  assert rc == 0 and "resumed" not in out, err
  assert (wd / "checkpoints" / "2").is_dir()


# ---------------------------------------------------------------------------------------------
# Signals: train.py in a subprocess, as a user runs it.

def start(workdir, corpus, *extra):
  cmd = [sys.executable, "train.py", *train_argv(workdir, corpus, *extra)]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(p, words: str, timeout=300) -> str:
  """stdout up to the first line holding `words` (the process runs on)."""
  seen, deadline = [], time.time() + timeout
  for line in p.stdout:
    seen.append(line)
    if words in line or time.time() > deadline:
      break
  return "".join(seen)


def finish(p, timeout=300):
  out, err = p.communicate(timeout=timeout)
  return p.returncode, out, err


def last_line(err: str) -> str:
  """stderr's last line (earlier ones are JAX's start-up notes), checked to be the only one of
  ours and not part of a traceback."""
  assert "Traceback" not in err, err
  lines = err.strip().splitlines()
  assert sum(l.startswith(("interrupted", "preempted", "error")) for l in lines) == 1, err
  return lines[-1]


def test_ctrl_c_saves_and_exits_130(corpus, tmp_path):
  wd = tmp_path / "run"
  p = start(wd, corpus, "train.steps=100000", "ckpt.every=100000")
  wait_for(p, "compiled in")
  while not (wd / "metrics.jsonl").exists() and p.poll() is None:     # the loop has started
    time.sleep(0.05)
  p.send_signal(signal.SIGINT)
  rc, _, err = finish(p)
  line = last_line(err)
  assert rc == 130 and line.startswith("interrupted (Ctrl-C): checkpoint at step "), (rc, err)
  step = int(line.split("checkpoint at step ")[1].split()[0])
  assert step >= 1 and (wd / "checkpoints" / str(step)).is_dir()
  # A second Ctrl-C aborts at once, without waiting for the step to end.
  (wd / "metrics.jsonl").unlink()
  p = start(wd, corpus, "train.steps=100000", "ckpt.every=100000")
  wait_for(p, "compiled in")
  metrics = wd / "metrics.jsonl"
  while not (metrics.exists() and metrics.stat().st_size) and p.poll() is None:   # steps run
    time.sleep(0.05)
  p.send_signal(signal.SIGINT)
  wait_for(p, "Ctrl-C again to abort")     # said by the first Ctrl-C's handler itself
  t0 = time.time()
  p.send_signal(signal.SIGINT)
  rc, _, err = finish(p)
  assert rc == 130 and last_line(err).startswith("interrupted (Ctrl-C): a second Ctrl-C"), err
  assert time.time() - t0 < 30


def test_signal_before_the_first_compile_is_honoured(run, corpus, tmp_path):
  # While the data is read (nothing written yet): ends at once, in one line; should the signal
  # come once every check passed, before step 1: nothing trained, nothing saved.
  for sig, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
    wd = tmp_path / f"early-{sig}"
    p = start(wd, corpus)
    wait_for(p, "config:")
    p.send_signal(sig)
    rc, out, err = finish(p)
    assert rc == code and "Traceback" not in err, (rc, err)
    if sig == signal.SIGINT:
      assert last_line(err).startswith("interrupted (Ctrl-C): "), err
    else:
      assert "preempted: signal 15 before training started" in err or \
          "preempted (signal 15): stopped before step 1" in out, (out, err)
    assert not list((wd / "checkpoints").glob("[0-9]*"))
  # While restoring and compiling: honoured before the next step, nothing lost.
  wd = copy(run, tmp_path)
  p = start(wd, corpus, "train.steps=100000", "ckpt.every=100000")
  wait_for(p, "resumed from step 2")
  p.send_signal(signal.SIGTERM)
  rc, out, err = finish(p)
  assert rc == 0 and "Traceback" not in err, err
  assert "preempted (signal 15): " in out, out[-2000:]


def test_binary_config_json_is_one_line(tmp_path, capsys):
  wd = tmp_path / "run"
  wd.mkdir()
  for content in (bytes(range(256)), b"[1, 2]", b'{"model": 5}'):
    (wd / "config.json").write_bytes(content)
    for fn, argv in ((entry.export, ["--workdir", wd, "--format", "safetensors", "--out",
                                     tmp_path / "out"]),
                     (entry.eval_, ["--workdir", wd])):
      rc = fn(list(map(str, argv)))
      err = capsys.readouterr().err
      assert rc == 2 and one_line(err, f"error: {wd / 'config.json'}"), (content, err)
