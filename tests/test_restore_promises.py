"""Every read of a checkpoint goes through one restore (training/checkpoint.py): train, eval, export
and --import verify checksums (the data iterator state's too), fall back to the previous checkpoint
with one warning line, refuse a checkpoint without checksums unless told, and eval/export never
change the workdir. Imports of damaged files and meaningless eval counts are one line each."""
import json
import logging
import os
import re
import shutil
import sys

import numpy as np
import pytest

import entry
import modelzoo
from interop import hf, params_io
from test_faults import args, saved, stale_arrays, truncate
from training import checkpoint
from training import step as step_lib
from training import workdir as workdir_lib
from training.checkpoint import Checkpointer, CheckpointError


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus):
  """A tiny trained run with checkpoints 5, 10 and 15 (stale_arrays copies 10's under 15's name)."""
  wd = tmp_path_factory.mktemp("promises") / "run"
  assert entry.train(args(wd, corpus, "train.steps=15", "ckpt.every=5")) == 0
  return wd


class CurrentStderr(logging.StreamHandler):
  """Writes to whatever sys.stderr is at the time: pytest swaps it per test and phase, and a
  handler bound to one test's stream would write to a closed file in the next."""

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, _):
    pass


@pytest.fixture(autouse=True)
def warnings_to_stderr():
  """Around each test (after the module's training run, whose logging set-up binds stdout: pytest
  sets up wider-scoped fixtures first): in-process entry points that set up logging rebind it."""
  logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[CurrentStderr()],
                      force=True)
  yield
  logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[CurrentStderr()],
                      force=True)


@pytest.fixture
def wd(run, tmp_path):
  """A fresh copy of the run per test: tests damage it."""
  return shutil.copytree(run, tmp_path / "run")


def truncate_arrays(step_dir):
  """Array data files cut in half, metadata intact: the reads fail inside tensorstore (whose
  callbacks then print a traceback per chunk, 38 for this run), not in orbax's JSON."""
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      os.truncate(f, f.stat().st_size // 2)


def listing(workdir) -> dict:
  """Every path under the workdir with its size: what 'unchanged' means here."""
  return {str(p.relative_to(workdir)): p.stat().st_size if p.is_file() else -1
          for p in workdir.rglob("*")}


def noise_free(err: str) -> list[str]:
  """stderr's lines of our own: the CUDA-stub lines some jaxlib builds print at start-up dropped."""
  return [l for l in err.splitlines()
          if l.strip() and "cudart_stub" not in l and "absl::InitializeLog" not in l]


def report(out: str, err: str) -> tuple[dict, list[str]]:
  """An entry point's JSON report and every other line it printed, stdout and stderr alike (the
  warnings' stream depends on the logging set-up an earlier in-process run left behind)."""
  start = re.search(r"^\{", out, re.MULTILINE)
  obj = json.loads(out[start.start():]) if start else None
  return obj, noise_free((out[:start.start()] if start else out) + "\n" + err)


def abstract_state(workdir):
  cfg = workdir_lib.read_config(workdir)
  mesh = workdir_lib.restore_mesh(cfg)
  model, (tx, _) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  return step_lib.init_state(model, tx, cfg, mesh)[2]


def test_export_verifies_checksums_and_falls_back_to_the_previous_checkpoint(wd, tmp_path, capsys):
  ckpts = wd.absolute() / "checkpoints"
  stale_arrays(ckpts / "15")      # reads fine: only the checksums tell
  truncate_arrays(ckpts / "10")   # unreadable inside tensorstore
  capsys.readouterr()
  assert entry.export(["--workdir", wd, "--format", "safetensors", "--out", tmp_path / "st"]) == 0
  obj, lines = report(*capsys.readouterr())
  assert obj["step"] == 5, obj
  assert len(lines) == 2, lines                     # the two warnings and nothing else
  assert f"checkpoint {ckpts / '15'} could not be restored (ValueError: checksum mismatch" in lines[0]
  assert f"checkpoint {ckpts / '10'} could not be restored" in lines[1]
  flat = params_io.load_tensors(tmp_path / "st" / params_io.WEIGHTS)
  want = params_io.flatten(saved(wd, 5)["params"])
  assert flat.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(flat[k], want[k])


def test_a_checkpoint_without_checksums_is_refused_unless_allowed(wd, capsys):
  ckpt_dir = wd.absolute() / "checkpoints" / "15"
  shutil.rmtree(ckpt_dir / "checksum")
  before = listing(wd)
  capsys.readouterr()
  assert entry.eval_(["--workdir", wd, "--batches", "1"]) == 1
  err = noise_free(capsys.readouterr().err)
  assert err == [(f"error: checkpoint {ckpt_dir} has no checksums (unverified); pass "
                  "--allow-unverified to restore it anyway")], err
  with pytest.raises(CheckpointError, match="has no checksums"):    # train.py's restore
    Checkpointer(wd, 5, 10).restore(abstract_state(wd))
  assert listing(wd) == before                                       # refused: nothing moved
  assert entry.eval_(["--workdir", wd, "--batches", "1", "--allow-unverified"]) == 0
  obj, lines = report(*capsys.readouterr())
  assert obj["step"] == 15
  assert len(lines) == 1 and "has no checksums: restoring it unverified" in lines[0], lines


def test_data_iterator_state_is_covered_by_the_checksum(wd, capsys):
  ckpts = wd.absolute() / "checkpoints"
  sums = json.loads((ckpts / "15" / "checksum" / "metadata").read_text())
  data = json.loads((ckpts / "15" / "data" / "metadata").read_text())
  assert checkpoint.DATA_KEY in sums                                # every new save covers it
  # A checksum dict written before the data entry existed verifies the arrays only, silently.
  old = wd.parent / "old"
  shutil.copytree(wd, old)
  (old / "checkpoints" / "15" / "checksum" / "metadata").write_text(
      json.dumps({k: v for k, v in sums.items() if k != checkpoint.DATA_KEY}))
  step, _, got = Checkpointer(old, 5, 10, read_only=True).restore(abstract_state(old))
  assert (step, got) == (15, data)
  assert not report(*capsys.readouterr())[1]
  # The iterator's position changed by a byte: the checkpoint is bad, the previous one restores.
  (ckpts / "15" / "data" / "metadata").write_text(
      json.dumps({k: v + 1 if isinstance(v, int) else v for k, v in data.items()}))
  step, _, _ = Checkpointer(wd, 5, 10).restore(abstract_state(wd))
  assert step == 10
  _, lines = report(*capsys.readouterr())
  out = "\n".join(lines)
  assert f"checkpoint {ckpts / '15'} could not be restored" in out, out
  assert "checksum mismatch in 1 items, e.g. the data iterator state" in out, out


def test_eval_and_export_never_move_checkpoints(wd, tmp_path, capsys):
  for s in (5, 10, 15):
    truncate(wd / "checkpoints" / str(s))
  before = listing(wd)
  capsys.readouterr()
  assert entry.eval_(["--workdir", wd, "--batches", "1"]) == 1
  assert entry.export(["--workdir", wd, "--format", "safetensors", "--out", tmp_path / "st"]) == 1
  _, lines = report(*capsys.readouterr())
  assert "Traceback" not in "\n".join(lines), lines
  assert sum("skipped (left in place)" in l for l in lines) == 6, lines
  assert sum("none of the checkpoints" in l for l in lines) == 2, lines
  assert listing(wd) == before          # all three still where train.py will look for them
  assert not (wd / "checkpoints_corrupt").exists()


def test_truncated_safetensors_import_is_one_line(wd, tmp_path, capsys):
  cfg = workdir_lib.read_config(wd)
  src = params_io.save_safetensors(tmp_path / "st", saved(wd)["params"], cfg, wd)
  weights = src / params_io.WEIGHTS
  os.truncate(weights, weights.stat().st_size // 2)
  capsys.readouterr()
  assert entry.export(["--import", src, "--workdir", tmp_path / "imp"]) == 2
  err = noise_free(capsys.readouterr().err)
  assert len(err) == 1 and str(weights) in err[0] and "not a readable safetensors file" in err[0], err
  # A Hugging Face folder (read before transformers or torch would be needed).
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  shutil.copyfile(weights, tmp_path / "hf" / "model.safetensors")
  with pytest.raises(params_io.ConfigError, match="model.safetensors is not a readable safetensors"):
    hf.read_dir(tmp_path / "hf")


@pytest.mark.parametrize("flag, value", [("--batches", "-1"), ("--batches", "0"),
                                         ("--max-new-tokens", "-5")])
def test_eval_refuses_non_positive_batches_and_tokens(tmp_path, capsys, flag, value):
  # An empty workdir: the refusal must come before anything (config, checkpoint) is read.
  capsys.readouterr()
  assert entry.eval_(["--workdir", tmp_path, "--sample", "the", flag, value]) == 2
  err = noise_free(capsys.readouterr().err)
  assert err == [f"error: {flag} {value}: must be at least 1"], err


def test_abandoned_tensorstore_reads_log_nothing_but_other_asyncio_errors_still_show(caplog):
  """A truncated checkpoint leaves sibling reads whose futures asyncio reports when they are
  collected (at a moment that depends on the garbage collector): those lines are dropped, others
  kept."""
  checkpoint._quiet_abandoned_writes()
  aio = logging.getLogger("asyncio")
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    aio.error("Task exception was never retrieved\nfuture: <Task finished exception="
              "ValueError('OUT_OF_RANGE: [tensorstore_spec=...]')>")
    aio.error("Task exception was never retrieved\nfuture: <Task finished exception="
              "KeyError('mine')>")
  assert [r.getMessage().splitlines()[-1] for r in caplog.records] == [
      "future: <Task finished exception=KeyError('mine')>"]
