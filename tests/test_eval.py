"""eval.py: a run is restored onto its own mesh (or the nearest these devices hold, with a note),
its loss there equals one device's, and its eval step compiles for a TPU slice (--aot)."""
import json

import jax
import pytest

import entry
from configs import base
from test_aot import needs_tpu
from training import evaluate, workdir
from test_export import corpus, make_run  # noqa: F401  (corpus: the fixture)

FSDP_TENSOR = ["mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"]


def run_eval(capsys, run, devices=None):
  """eval.py's report of `run` on `devices` (--batches 1, a greedy 4-token --sample): out, stderr."""
  capsys.readouterr()
  out = evaluate.report(run, batches=1, sample="the cat", max_new_tokens=4, temperature=0.0,
                        devices=devices)
  return json.loads(json.dumps(out)), capsys.readouterr().err


def test_eval_on_the_runs_mesh_equals_one_device(tmp_path, corpus, capsys):
  make_run(tmp_path, corpus, *FSDP_TENSOR)
  cfg, _, step, params, mesh = evaluate.load_run(tmp_path)
  assert dict(mesh.shape) == dict(data=1, fsdp=4, tensor=2) and step == 5
  q = params["layers"]["attn"]["query"]["kernel"]                  # [L, D, H, d]: fsdp x tensor
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len({s.device for s in q.addressable_shards}) == 8
  out8, err8 = run_eval(capsys, tmp_path)
  assert out8["mesh"] == dict(data=1, fsdp=4, tensor=2) and "note:" not in err8
  out1, err1 = run_eval(capsys, tmp_path, devices=jax.devices()[:1])
  assert out1["mesh"] == dict(data=1, fsdp=1, tensor=1)
  assert ("note: the run's mesh data=1 fsdp=4 tensor=2 needs 8 devices but 1 are available: "
          "restoring onto mesh data=1 fsdp=1 tensor=1 instead") in err1
  assert out8["batches"] == out1["batches"] == 1
  assert out8["eval_loss"] == pytest.approx(out1["eval_loss"], rel=1e-5)
  assert out8["sample"] == out1["sample"]          # greedy KV-cache decoding on the sharded params


def test_sample_draws_depend_on_the_run_and_the_step(tmp_path):
  # At one --seed, unrelated runs (and two checkpoints of one) must not share their random draws.
  for name, text in (("a", '{"model": 1}'), ("b", '{"model": 2}')):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(text)
  keys = [evaluate.sample_key(0, tmp_path / r, s) for r, s in (("a", 5), ("b", 5), ("a", 6))]
  draws = [jax.random.uniform(k).item() for k in keys]
  assert len(set(draws)) == 3
  assert jax.random.uniform(evaluate.sample_key(0, tmp_path / "a", 5)).item() == draws[0]


@pytest.mark.parametrize("mesh, n, want", [
    (dict(data=1, fsdp=16, tensor=1), 8, dict(data=1, fsdp=8, tensor=1)),    # a pod run, 8 here
    (dict(data=-1, fsdp=16, tensor=1), 8, dict(data=1, fsdp=8, tensor=1)),
    (dict(data=2, fsdp=4, tensor=4), 2, dict(data=1, fsdp=1, tensor=2)),
    (dict(data=1, fsdp=2, tensor=1), 8, dict(data=4, fsdp=2, tensor=1)),     # fewer than here
    (dict(data=3, fsdp=1, tensor=1), 8, dict(data=8, fsdp=1, tensor=1)),
    (dict(data=-1, fsdp=4, tensor=1), 8, None),                              # fits: its own
    (dict(data=2, fsdp=2, tensor=2), 8, None),
])
def test_restore_mesh_keeps_what_divides_the_devices(mesh, n, want):
  sizes, note = workdir.restore_mesh_shape(base.MeshConfig(**mesh), n)
  if want is None:
    assert note is None and sizes == base.mesh_shape(base.MeshConfig(**mesh), n)
  else:
    assert sizes == want and note.endswith(
        "restoring onto mesh " + " ".join(f"{k}={v}" for k, v in want.items()) + " instead")


def test_eval_batch_divides_the_data_parallel_size():
  cfg = base.load("configs/quickstart.py", ["mesh.data=4", "mesh.fsdp=2", "train.batch_size=24",
                                            "train.grad_accum=2"])
  mesh = workdir.restore_mesh(cfg, jax.devices()[:5])        # fsdp=2 does not divide 5: data=5
  got = workdir.on_mesh(cfg, mesh)
  assert dict(mesh.shape) == dict(data=5, fsdp=1, tensor=1)
  assert (got.train.batch_size, got.train.grad_accum) == (20, 1)
  base.validate(got, 5)


@needs_tpu
def test_eval_step_compiles_for_v5e(tmp_path, corpus, capsys):
  make_run(tmp_path, corpus, *FSDP_TENSOR)        # 8 devices; v5e:2x2 has 4
  capsys.readouterr()
  assert entry.eval_(["--workdir", str(tmp_path), "--aot", "v5e:2x2"]) == 0
  out = capsys.readouterr()
  assert "restoring onto mesh data=1 fsdp=2 tensor=2 instead" in out.err
  assert "eval step of" in out.out and "mesh data=1 fsdp=2 tensor=2" in out.out
  assert "HBM: fits" in out.out
  # From a config file, with a model a v5e cannot hold replicated: exit 4.
  assert entry.eval_(["--config", "configs/quickstart.py", "--aot", "v5e:2x2", "mesh.data=4",
                       "model.d_model=8192", "model.n_heads=64", "model.d_ff=32768",
                       "model.attn_impl=xla"]) == 4
  assert "DOES NOT FIT" in capsys.readouterr().out
