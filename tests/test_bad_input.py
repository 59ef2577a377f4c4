"""Bad input through the CLI (train.cli, in-process): each case exits 2 with one clear line naming
the offending value, no traceback, and nothing compiled ("compiled in" is logged after compiling)."""
import numpy as np
import pytest

import entry
import modelzoo
from configs import base
from layers import sharding
from training import step as step_lib
from training.checkpoint import Checkpointer

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64",
        "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "train.warmup_steps=2",
        "train.steps=4", "train.eval_steps=2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("inputs")
  words = ["the", "cat", "sat", "on", "a", "mat", "."]
  (d / "ok.txt").write_text(" ".join(np.random.default_rng(0).choice(words, 6000)) + "\n")
  (d / "empty.txt").write_bytes(b"")
  (d / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 50)
  (d / "tiny.txt").write_text("the cat sat on the mat.\n" * 12)
  (d / "odd.bin").write_bytes(b"\x01\x00\x02")
  np.full(5000, 300, np.uint16).tofile(d / "big_ids.bin")
  (d / "a_file").write_text("not a directory\n")
  return d


def cli(capsys, workdir, *argv, config="configs/quickstart.py", data=None):
  data = [] if data is None else ["data.source=text", f"data.path={data}"]
  rc = entry.train(["--config", config, "--workdir", str(workdir), *TINY, *data, *argv])
  out, err = capsys.readouterr()
  return rc, out, err


# (extra argv, data file (None: the stdlib source), words the error must contain)
CASES = {
    "misspelt key": (["model.n_layer=2"], "ok", ["model.n_layer", "did you mean 'model.n_layers'"]),
    "unknown section": (["trian.steps=3"], "ok", ["trian.steps", "did you mean 'train.steps'"]),
    "not key=value": (["train.steps"], "ok", ["'train.steps' is not of the form key.path=value"]),
    "int expected": (["train.steps=ten"], "ok", ["train.steps=ten", "type int"]),
    "bool expected": (["model.tie_embeddings=maybe"], "ok", ["model.tie_embeddings", "bool"]),
    "mesh size": (["mesh.data=3"], "ok", ["needs 3 devices", "8 are available"]),
    "batch vs data parallel": (["train.batch_size=12"], "ok",
                               ["train.batch_size/train.grad_accum=12", "data-parallel size", "8"]),
    "grad accum": (["train.batch_size=16", "train.grad_accum=3"], "ok", ["train.grad_accum=3"]),
    "heads vs width": (["model.n_heads=3"], "ok", ["model.n_heads=3", "model.d_model=32"]),
    "positions table": (["data.seq_len=64"], "ok", ["data.seq_len=64", "model.max_len=32"]),
    "zero steps": (["train.steps=0"], "ok", ["train.steps=0 must be > 0"]),
    "negative steps": (["train.steps=-5"], "ok", ["train.steps=-5 must be > 0"]),
    "zero lr": (["train.lr=0"], "ok", ["train.lr=0.0 must be > 0"]),
    "negative lr": (["train.lr=-0.001"], "ok", ["train.lr=-0.001 must be > 0"]),
    "negative max_bad_steps": (["train.max_bad_steps=-1"], "ok", ["train.max_bad_steps=-1"]),
    "unknown model": (["model.name=mamba3"], "ok", ["model.name='mamba3'", "did you mean"]),
    "unknown kernel impl": (["model.attn_impl=triton"], "ok", ["model.attn_impl='triton'"]),
    "unknown attention kind": (["model.attention=sigmod"], "ok", ["did you mean 'sigmoid'"]),
    "vocab below tokenizer": (["model.vocab_size=100"], "ok",
                              ["model.vocab_size=100", "byte tokenizer's vocabulary (256)"]),
    "missing data file": ([], "missing.txt", ["missing.txt", "does not exist"]),
    "empty data file": ([], "empty.txt", ["empty.txt", "is empty"]),
    "non-UTF-8 text": ([], "latin1.txt", ["latin1.txt", "not UTF-8", "0xe9"]),
    "glob matching nothing": ([], "*.nothing", ["matches no file"]),
    "too little validation data": ([], "tiny.txt", ["fewer than one global batch"]),
    "odd-sized token file": (["data.source=tokens"], "odd.bin", ["odd.bin", "odd size"]),
    "token ids beyond the tokenizer": (["data.source=tokens"], "big_ids.bin",
                                       ["token id 300", "256 ids"]),
    "launch flags": (["--num-processes", "2", "--process-id", "0"], "ok", ["missing --coordinator"]),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_clear_line_before_compiling(name, files, tmp_path, capsys):
  argv, data, words = CASES[name]
  rc, out, err = cli(capsys, tmp_path / "run", *argv, data=str(files / data))
  assert rc == 2, (name, err, out[-2000:])
  assert err.startswith("error: ") and err.count("\n") == 1, err
  for w in words:
    assert w in err, (w, err)
  assert "Traceback" not in err + out and "compiled in" not in out


def test_unknown_config_file(tmp_path, capsys):
  rc, _, err = cli(capsys, tmp_path, config="configs/nope.py")
  assert rc == 2 and "--config 'configs/nope.py': no such file" in err


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_workdir_that_cannot_be_a_directory(where, files, capsys):
  wd = files / "a_file" if where == "file" else files / "a_file" / "run"
  rc, _, err = cli(capsys, wd, data=str(files / "ok.txt"))
  assert rc == 2 and f"--workdir {wd}" in err and "Traceback" not in err, err


def test_workdir_of_another_run_and_a_foreign_config_json(files, tmp_path, capsys):
  other = base.apply_overrides(base.load("configs/quickstart.py", TINY), ["model.d_model=64"])
  (tmp_path / "config.json").write_text(base.to_json(other))
  rc, _, err = cli(capsys, tmp_path, data=str(files / "ok.txt"))
  assert rc == 2 and "holds another run" in err and "model.d_model" in err, err
  (tmp_path / "config.json").write_text("{not json")
  rc, _, err = cli(capsys, tmp_path, data=str(files / "ok.txt"))
  assert rc == 2 and "is not a seqzoo config.json" in err, err


def test_checkpoint_of_another_model_shape(files, tmp_path, capsys):
  """A checkpoint copied in without its config.json: the shapes themselves give it away."""
  cfg = base.load("configs/quickstart.py", TINY)
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, 8))
  model, (tx, _) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  make, rng, _, _ = step_lib.init_state(model, tx, cfg, mesh)
  ck = Checkpointer(tmp_path, 1, 1)
  ck.save(3, make(rng), {}, force=True)
  ck.close()
  rc, out, err = cli(capsys, tmp_path, "model.d_model=64", data=str(files / "ok.txt"))
  assert rc == 2 and f"checkpoint {tmp_path.absolute() / 'checkpoints' / '3'} was written" in err
  assert "embedding is shape [256, 32] there but shape [256, 64] in this config" in err, err
  assert "compiled in" not in out


@pytest.mark.parametrize("config, field", [("configs/mamba2_tiny.py", "ssm_chunk"),
                                           ("configs/deltanet_tiny.py", "dn_chunk")])
def test_sequence_not_a_multiple_of_the_kernel_chunk_is_padded_and_said(config, field, files,
                                                                         tmp_path, capsys):
  rc, out, err = cli(capsys, tmp_path, "--check", f"model.{field}=16", "data.seq_len=40",
                     "model.max_len=64", "model.pos=none", config=config, data=str(files / "ok.txt"))
  assert rc == 0, err
  assert (f"data.seq_len=40 is not a multiple of model.{field}=16; the kernel pads each sequence "
          "to 48 automatically") in out
  assert "check passed" in out and "compiled in" not in out
