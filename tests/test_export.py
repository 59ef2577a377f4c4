"""export.py: safetensors / HF / StableHLO round trips give the same logits; restores onto another
mesh and dtype; imported runs continue training; models HF cannot express are refused clearly."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as st_np

import entry
import modelzoo
from configs import base
from interop import hf, params_io
from layers import sharding
from training import step as step_lib
from training.checkpoint import Checkpointer

SMALL = ["model.vocab_size=256", "model.d_model=32", "model.n_layers=2", "model.n_heads=4",
         "model.d_ff=64", "model.max_len=32", "data.seq_len=16", "train.batch_size=8",
         "train.warmup_steps=1", "train.log_every=1", "train.eval_every=1000", "train.eval_steps=1"]
LLAMA = ["model.norm=rmsnorm", "model.norm_bias=false", "model.pos=rope", "model.mlp=swiglu",
         "model.use_bias=false", "model.tie_embeddings=false", "model.n_kv_heads=2",
         "model.rope_theta=500000", "model.norm_eps=1e-6"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  f = tmp_path_factory.mktemp("data") / "corpus.txt"
  f.write_text("the cat sat on the mat and the dog ran home. " * 400)
  return str(f)


def make_run(workdir: Path, corpus: str, *overrides, config="configs/quickstart.py"):
  """A run directory with a checkpoint of random parameters (every tensor, norms and biases too)."""
  cfg = base.apply_overrides(base.load(config, SMALL), ["data.source=text", f"data.path={corpus}",
                                                       "mesh.data=8", *overrides])
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(base.to_json(cfg))
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
  model, (tx, _) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  make, rng, _, _ = step_lib.init_state(model, tx, cfg, mesh)
  state = make(rng)
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = tree.unflatten([jax.random.normal(k, x.shape, x.dtype) * 0.3 + (x == 1).all()
                           for k, x in zip(keys, leaves)])   # norm scales stay near 1
  state = state.replace(params=params)
  ck = Checkpointer(workdir, 1, 1, async_save=False)
  ck.save(5, state, {}, force=True)
  ck.close()
  return cfg, jax.device_get(params)


def logits(model_cfg, params, tokens):
  return np.asarray(jax.jit(modelzoo.build(model_cfg).apply)({"params": params}, tokens))


def tokens(b=2, t=16, v=256, seed=0):
  return np.random.default_rng(seed).integers(0, v, (b, t)).astype(np.int32)


def test_safetensors_round_trip_and_imported_run_continues_training(tmp_path, corpus, capsys):
  cfg, params = make_run(tmp_path / "run", corpus, *LLAMA, "model.scan_layers=false")
  out = tmp_path / "st"
  assert entry.export(["--workdir", str(tmp_path / "run"), "--format", "safetensors",
                      "--out", str(out)]) == 0
  flat = st_np.load_file(out / "model.safetensors")
  assert flat["layers_1.mlp.wi.kernel"].shape == (32, 2, 64)
  assert base.from_dict(json.loads((out / "config.json").read_text())) == cfg
  # Import into a new run: same parameters bit for bit, hence the same logits.
  capsys.readouterr()
  assert entry.export(["--import", str(out), "--workdir", str(tmp_path / "imp")]) == 0
  cmd = json.loads(capsys.readouterr().out)["train"]
  _, step, got = params_io.restore_params(tmp_path / "imp")
  assert step == 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), params)
  x = tokens()
  np.testing.assert_allclose(logits(cfg.model, jax.device_get(got), x), logits(cfg.model, params, x),
                             atol=1e-5, rtol=0)
  # The printed command resumes the imported run at step 0 and trains it.
  argv = cmd.split()[2:] + ["train.steps=2"]
  assert entry.train(argv) == 0
  assert "resumed from step 0" in capsys.readouterr().out
  _, step, trained = params_io.restore_params(tmp_path / "imp")
  assert step == 2
  assert not np.array_equal(jax.device_get(trained)["embed"]["embedding"], params["embed"]["embedding"])


def test_to_norm_writes_a_crmsnorm_run_with_the_same_logits(tmp_path, corpus, capsys):
  cfg, params = make_run(tmp_path / "run", corpus)           # GPT-2 style: Pre-LN, tied
  out = tmp_path / "crms"
  capsys.readouterr()
  assert entry.export(["--workdir", str(tmp_path / "run"), "--to-norm", "crmsnorm",
                       "--out", str(out)]) == 0
  cmd = json.loads(capsys.readouterr().out)["train"]
  got_cfg, step, got = params_io.restore_params(out)
  assert (got_cfg.model.norm, got_cfg.model.d_stream, step) == ("crmsnorm", 31, 0)
  x = tokens()
  ref = logits(cfg.model, params, x)
  np.testing.assert_allclose(logits(got_cfg.model, jax.device_get(got), x), ref,
                             atol=1e-5 * np.abs(ref).max(), rtol=0)
  assert entry.train(cmd.split()[2:] + ["train.steps=1"]) == 0   # the converted run trains on
  # a run in the way, or a model it cannot convert, is refused before anything is written
  assert entry.export(["--workdir", str(tmp_path / "run"), "--to-norm", "rmsnorm",
                       "--out", str(out)]) == 2
  assert "is not a new or empty folder" in capsys.readouterr().err
  assert entry.export(["--workdir", str(out), "--to-norm", "rmsnorm",
                       "--out", str(tmp_path / "back")]) == 2
  assert "one way only" in capsys.readouterr().err and not (tmp_path / "back").exists()


def test_restore_onto_another_mesh_in_bfloat16(tmp_path, corpus):
  _, params = make_run(tmp_path, corpus)                        # saved from a data=8 mesh
  mesh = sharding.make_mesh(dict(data=1, fsdp=4, tensor=2))
  cfg, _, got = params_io.restore_params(tmp_path, param_dtype="bfloat16", mesh=mesh)
  assert cfg.model.param_dtype == "bfloat16"
  q = got["layers"]["attn"]["query"]["kernel"]                  # [L, D, H, d]: fsdp x tensor
  assert q.dtype == jnp.bfloat16
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len({s.device for s in q.addressable_shards}) == 8
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b.astype(jnp.bfloat16)),
               got, params)


def test_export_and_import_on_the_runs_own_mesh(tmp_path, corpus, capsys):
  cfg, params = make_run(tmp_path / "run", corpus, "mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
  capsys.readouterr()
  _, _, got = params_io.restore_params(tmp_path / "run")      # default: the run's own mesh
  assert "note:" not in capsys.readouterr().err
  q = got["layers"]["attn"]["query"]["kernel"]                  # [L, D, H, d]: fsdp x tensor
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert dict(q.sharding.mesh.shape) == dict(data=1, fsdp=4, tensor=2)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), got, params)
  # The forward on the sharded parameters (kernels per shard) == one device's.
  x = tokens()
  model = modelzoo.build(cfg.model)
  with sharding.activate(q.sharding.mesh):
    sharded = np.asarray(jax.jit(model.apply)({"params": got}, x))
  np.testing.assert_allclose(sharded, logits(cfg.model, params, x), atol=1e-5, rtol=0)
  # Export, then import into a run on the same mesh: written from tx.init/init traced on it.
  assert entry.export(["--workdir", str(tmp_path / "run"), "--format", "safetensors",
                      "--out", str(tmp_path / "st")]) == 0
  assert entry.export(["--import", str(tmp_path / "st"), "--workdir", str(tmp_path / "imp")]) == 0
  _, step, back = params_io.restore_params(tmp_path / "imp")
  assert step == 0 and back["layers"]["attn"]["query"]["kernel"].sharding.spec == q.sharding.spec
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), back, params)


def test_a_run_whose_mesh_the_devices_cannot_hold_falls_back(tmp_path, corpus, capsys):
  run = tmp_path / "run"
  cfg, params = make_run(run, corpus, "mesh.data=1", "mesh.fsdp=8")
  pod = base.apply_overrides(cfg, ["mesh.fsdp=16"])             # as if trained on 16 devices
  (run / "config.json").write_text(base.to_json(pod))
  capsys.readouterr()
  assert entry.export(["--workdir", str(run), "--format", "safetensors",
                      "--out", str(tmp_path / "st"), "--dtype", "bfloat16"]) == 0
  assert ("note: the run's mesh data=1 fsdp=16 tensor=1 needs 16 devices but 8 are available: "
          "restoring onto mesh data=1 fsdp=8 tensor=1 instead") in capsys.readouterr().err
  cfg16, got = params_io.load_safetensors(tmp_path / "st")
  assert cfg16.mesh == pod.mesh                                 # the export keeps the run's mesh
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), got, params)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="no TPU compiler (libtpu): pip install -e '.[tpu]'")
def test_forward_compiles_for_v5e_on_the_runs_mesh(tmp_path, corpus, capsys):
  make_run(tmp_path, corpus, "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
  capsys.readouterr()
  assert entry.export(["--workdir", str(tmp_path), "--aot", "v5e:2x2", "--batch", "4"]) == 0
  out = capsys.readouterr()
  assert "restoring onto mesh data=1 fsdp=2 tensor=2" in out.err     # 8 devices' mesh on 4
  assert "forward [4, 16]" in out.out and "mesh data=1 fsdp=2 tensor=2" in out.out
  assert "HBM: fits" in out.out


def test_stablehlo_runs_without_seqzoo(tmp_path, corpus):
  cfg, params = make_run(tmp_path / "run", corpus)
  out = tmp_path / "hlo"
  assert entry.export(["--workdir", str(tmp_path / "run"), "--format", "stablehlo", "--out", str(out),
                      "--batch", "2", "--cache-len", "16"]) == 0
  x = tokens()
  np.save(tmp_path / "tokens.npy", x)
  script = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from safetensors.numpy import load_file
    d = sys.argv[1]
    p = load_file(d + "/params.safetensors")
    x = np.load(d + "/../tokens.npy")
    fwd = jax.export.deserialize(open(d + "/forward.jax_export", "rb").read())
    dec = jax.export.deserialize(open(d + "/decode_step.jax_export", "rb").read())
    cache = {k: np.zeros(v["shape"], v["dtype"]) for k, v in json.load(open(d + "/cache.json")).items()}
    steps = []
    for t in range(x.shape[1]):
      lg, cache = dec.call(p, cache, x[:, t:t + 1], np.full((x.shape[0], 1), t, np.int32))
      steps.append(np.asarray(lg))
    np.savez(d + "/out.npz", forward=np.asarray(fwd.call(p, x)), forward1=np.asarray(fwd.call(p, x[:1])),
             decode=np.stack(steps, 1))
    ours = {"modelzoo", "layers", "kernels", "configs", "train", "eval", "export"}
    print(sorted(m for m in sys.modules if m.split(".")[0] in ours))
  """)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  r = subprocess.run([sys.executable, "-c", script, str(out)], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout      # no seqzoo module was loaded
  res, ref = np.load(out / "out.npz"), logits(cfg.model, params, x)
  np.testing.assert_allclose(res["forward"], ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(res["forward1"], ref[:1], atol=1e-5, rtol=0)    # symbolic batch
  np.testing.assert_allclose(res["decode"], ref, atol=1e-5, rtol=0)          # KV-cache steps


def test_zoo_model_without_hf_class(tmp_path, corpus, capsys):
  cfg, params = make_run(tmp_path / "run", corpus, config="configs/dual_stream_tiny_dense.py")
  run = str(tmp_path / "run")
  assert entry.export(["--workdir", run, "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
  assert "model.name='dual_stream' has no Hugging Face transformers class" in capsys.readouterr().err
  assert not (tmp_path / "hf").exists()
  assert entry.export(["--workdir", run, "--format", "safetensors", "--out", str(tmp_path / "st")]) == 0
  cfg2, got = params_io.load_safetensors(tmp_path / "st")
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, got, params)
  assert entry.export(["--workdir", run, "--format", "safetensors", "--out", str(tmp_path / "st16"),
                      "--dtype", "bfloat16"]) == 0
  cfg16, got16 = params_io.load_safetensors(tmp_path / "st16")
  assert cfg16.model.param_dtype == "bfloat16"
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), got16, params)
  assert entry.export(["--workdir", run, "--format", "stablehlo", "--out", str(tmp_path / "hlo"),
                      "--cache-len", "16"]) == 0
  fwd = jax.export.deserialize((tmp_path / "hlo" / "forward.jax_export").read_bytes())
  x = tokens()
  p = st_np.load_file(tmp_path / "hlo" / "params.safetensors")
  np.testing.assert_allclose(np.asarray(fwd.call(p, x)), logits(cfg.model, params, x), atol=1e-5, rtol=0)
  assert (tmp_path / "hlo" / "decode_step.jax_export").is_file()


def test_hf_refusals_name_the_setting():
  gpt = base.load("configs/quickstart.py").model
  assert hf.hf_arch(gpt) == "gpt2"
  for kw, needle in ((dict(norm_placement="post"), "model.norm_placement='post'"),
                     (dict(attention="sigmoid"), "model.attention='sigmoid'"),
                     (dict(pos="rope"), "neither GPT-2"), (dict(n_kv_heads=2), "model.n_kv_heads=2"),
                     (dict(norm_placement="peri"), "model.norm_placement='peri'"),
                     (dict(mlp="polynorm"), "neither GPT-2"), (dict(attn_gate=True), "attn_gate=True"),
                     (dict(attn_clip_gamma=-0.03), "attn_clip_gamma=-0.03"),
                     (dict(sigma_reparam=True), "sigma_reparam=True"),
                     (dict(norm="crmsnorm"), "neither GPT-2"),
                     (dict(head_bias=True, tie_embeddings=False), "head_bias=True")):
    with pytest.raises(base.ConfigError, match=needle.replace("(", r"\(")):
      hf.hf_arch(dataclasses.replace(gpt, **kw))
  with pytest.raises(base.ConfigError, match="rope type 'llama3'"):
    hf.from_hf_config(dict(model_type="llama", rope_parameters=dict(rope_type="llama3")))
  with pytest.raises(base.ConfigError, match="model_type='bert'"):
    hf.from_hf_config(dict(model_type="bert"))


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers (the optional [hf] extra), run by tests/hf_worker.py in a subprocess:
# transformers imports the PyPI package `kernels`, which seqzoo's kernels/ shadows on our sys.path.

HF_MISSING = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
needs_hf = pytest.mark.skipif(bool(HF_MISSING), reason=f"the [hf] extra is not installed (no "
                              f"{', '.join(HF_MISSING)}): pip install -e '.[hf]'")
REPO = Path(__file__).resolve().parents[1]


def hf_worker(tmp_path, *args):
  """tests/hf_worker.py with the repo off sys.path: -P, cwd outside the repo, no PYTHONPATH."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  r = subprocess.run([sys.executable, "-P", str(REPO / "tests" / "hf_worker.py"), *map(str, args)],
                     cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]


@needs_hf
def test_transformers_sees_its_own_kernels_package(tmp_path):
  # Fails if the worker's process ever finds seqzoo's kernels/ (the shadowing of issue 15) again.
  hf_worker(tmp_path, "probe", tmp_path / "probe.json")
  probe = json.loads((tmp_path / "probe.json").read_text())
  assert not Path(probe["kernels"]).resolve().is_relative_to(REPO), probe
  assert not any(p and Path(p).resolve() == REPO for p in probe["sys_path"]), probe["sys_path"]


def test_export_never_imports_transformers(tmp_path, corpus):
  # The export path is numpy + safetensors: a process with the repo on sys.path (python export.py)
  # can never hit the shadowed import, whatever transformers version is installed.
  make_run(tmp_path / "run", corpus)
  code = ("import runpy, sys\nsys.argv[0] = 'export.py'\ntry:\n  runpy.run_path('export.py', "
          "run_name='__main__')\nexcept SystemExit as e:\n  rc = e.code\n"
          "assert 'transformers' not in sys.modules and 'torch' not in sys.modules\nsys.exit(rc)")
  r = subprocess.run([sys.executable, "-c", code, "--workdir", str(tmp_path / "run"), "--format",
                      "hf", "--out", str(tmp_path / "hf")], cwd=REPO, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_exported_weights_get_the_folders_file_mode(tmp_path, corpus):
  # safetensors' save_file writes 0600; a shared export gets the mode of its other files.
  make_run(tmp_path / "run", corpus)
  for fmt, weights in (("safetensors", "model.safetensors"), ("hf", "model.safetensors"),
                       ("stablehlo", "params.safetensors")):
    out = tmp_path / fmt
    assert entry.export(["--workdir", str(tmp_path / "run"), "--format", fmt, "--out", str(out),
                        "--cache-len", "16"]) == 0
    mode = lambda f: (out / f).stat().st_mode & 0o777
    want = 0o666 & ~_umask()
    assert mode(weights) == want == mode("config.json" if fmt != "stablehlo" else "manifest.json"), fmt


def _umask() -> int:
  old = os.umask(0)
  os.umask(old)
  return old


@needs_hf
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_import_and_export_round_trip(tmp_path, corpus, arch, capsys):
  x = tokens()
  np.save(tmp_path / "tokens.npy", x)
  hf_worker(tmp_path, "make", arch, tmp_path / "hf", tmp_path / "tokens.npy", tmp_path / "ref.npz")
  assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()      # sharded
  ref = np.load(tmp_path / "ref.npz")
  run = tmp_path / "run"
  assert entry.export(["--import", str(tmp_path / "hf"), "--workdir", str(run), "data.source=text",
                      f"data.path={corpus}", *SMALL[6:]]) == 0
  assert "train.py --config" in capsys.readouterr().out
  cfg, _, params = params_io.restore_params(run)
  assert cfg.model.tie_embeddings == (arch == "gpt2")
  np.testing.assert_allclose(logits(cfg.model, jax.device_get(params), x), ref["logits"], atol=1e-5,
                             rtol=0)
  assert entry.export(["--workdir", str(run), "--format", "hf", "--out", str(tmp_path / "back")]) == 0
  hf_worker(tmp_path, "load", tmp_path / "back", tmp_path / "tokens.npy", tmp_path / "back.npz")
  back = np.load(tmp_path / "back.npz")
  np.testing.assert_allclose(back["logits"], ref["logits"], atol=1e-5, rtol=0)
  assert sorted(back.files) == sorted(ref.files)
  for k in ref.files:                       # the layouts are exact: tensors equal bit for bit
    np.testing.assert_array_equal(back[k], ref[k], err_msg=k)
