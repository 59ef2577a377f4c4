"""export.py: safetensors / HF / StableHLO round trips give the same logits; restores onto another
mesh and dtype; imported runs continue training; models HF cannot express are refused clearly."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as st_np

import export
import modelzoo
import train
from configs import base
from layers import sharding
from modelzoo import export_hf, export_io
from modelzoo.checkpoint import Checkpointer

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
  model, (tx, _) = modelzoo.build(cfg.model), train.make_optimizer(cfg.train)
  make, rng, _, _ = train.init_state(model, tx, cfg, mesh)
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
  assert export.main(["--workdir", str(tmp_path / "run"), "--format", "safetensors",
                      "--out", str(out)]) == 0
  flat = st_np.load_file(out / "model.safetensors")
  assert flat["layers_1.mlp.wi.kernel"].shape == (32, 2, 64)
  assert base.from_dict(json.loads((out / "config.json").read_text())) == cfg
  # Import into a new run: same parameters bit for bit, hence the same logits.
  capsys.readouterr()
  assert export.main(["--import", str(out), "--workdir", str(tmp_path / "imp")]) == 0
  cmd = json.loads(capsys.readouterr().out)["train"]
  _, step, got = export_io.restore_params(tmp_path / "imp")
  assert step == 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), params)
  x = tokens()
  np.testing.assert_allclose(logits(cfg.model, jax.device_get(got), x), logits(cfg.model, params, x),
                             atol=1e-5, rtol=0)
  # The printed command resumes the imported run at step 0 and trains it.
  argv = cmd.split()[2:] + ["train.steps=2"]
  assert train.main(argv) == 0
  assert "resumed from step 0" in capsys.readouterr().out
  _, step, trained = export_io.restore_params(tmp_path / "imp")
  assert step == 2
  assert not np.array_equal(jax.device_get(trained)["embed"]["embedding"], params["embed"]["embedding"])


def test_restore_onto_another_mesh_in_bfloat16(tmp_path, corpus):
  _, params = make_run(tmp_path, corpus)                        # saved from a data=8 mesh
  mesh = sharding.make_mesh(dict(data=1, fsdp=4, tensor=2))
  cfg, _, got = export_io.restore_params(tmp_path, param_dtype="bfloat16", mesh=mesh)
  assert cfg.model.param_dtype == "bfloat16"
  q = got["layers"]["attn"]["query"]["kernel"]                  # [L, D, H, d]: fsdp x tensor
  assert q.dtype == jnp.bfloat16
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len({s.device for s in q.addressable_shards}) == 8
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b.astype(jnp.bfloat16)),
               got, params)


def test_stablehlo_runs_without_seqzoo(tmp_path, corpus):
  cfg, params = make_run(tmp_path / "run", corpus)
  out = tmp_path / "hlo"
  assert export.main(["--workdir", str(tmp_path / "run"), "--format", "stablehlo", "--out", str(out),
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
  assert export.cli(["--workdir", run, "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
  assert "model.name='dual_stream' has no Hugging Face transformers class" in capsys.readouterr().err
  assert not (tmp_path / "hf").exists()
  assert export.main(["--workdir", run, "--format", "safetensors", "--out", str(tmp_path / "st")]) == 0
  cfg2, got = export_io.load_safetensors(tmp_path / "st")
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, got, params)
  assert export.main(["--workdir", run, "--format", "safetensors", "--out", str(tmp_path / "st16"),
                      "--dtype", "bfloat16"]) == 0
  cfg16, got16 = export_io.load_safetensors(tmp_path / "st16")
  assert cfg16.model.param_dtype == "bfloat16"
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), got16, params)
  assert export.main(["--workdir", run, "--format", "stablehlo", "--out", str(tmp_path / "hlo"),
                      "--cache-len", "16"]) == 0
  fwd = jax.export.deserialize((tmp_path / "hlo" / "forward.jax_export").read_bytes())
  x = tokens()
  p = st_np.load_file(tmp_path / "hlo" / "params.safetensors")
  np.testing.assert_allclose(np.asarray(fwd.call(p, x)), logits(cfg.model, params, x), atol=1e-5, rtol=0)
  assert (tmp_path / "hlo" / "decode_step.jax_export").is_file()


def test_hf_refusals_name_the_setting():
  gpt = base.load("configs/quickstart.py").model
  assert export_hf.hf_arch(gpt) == "gpt2"
  for kw, needle in ((dict(norm_placement="post"), "model.norm_placement='post'"),
                     (dict(attention="sigmoid"), "model.attention='sigmoid'"),
                     (dict(pos="rope"), "neither GPT-2"), (dict(n_kv_heads=2), "model.n_kv_heads=2")):
    with pytest.raises(base.ConfigError, match=needle.replace("(", r"\(")):
      export_hf.hf_arch(dataclasses.replace(gpt, **kw))
  with pytest.raises(base.ConfigError, match="rope type 'llama3'"):
    export_hf.from_hf_config(dict(model_type="llama", rope_parameters=dict(rope_type="llama3")))
  with pytest.raises(base.ConfigError, match="model_type='bert'"):
    export_hf.from_hf_config(dict(model_type="bert"))


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers (the optional [hf] extra).

try:
  import torch
  import transformers
  HF_MISSING = None
except ImportError as e:                    # printed in pytest's warnings summary, then skipped
  HF_MISSING = f"the [hf] extra (transformers, torch) is not installed: {e}"
  warnings.warn(f"test_export HF round trips skipped: {HF_MISSING}")


def random_hf_model(arch: str):
  torch.manual_seed(0)
  if arch == "gpt2":
    c = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                n_inner=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(c)
  else:
    c = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=64, rms_norm_eps=1e-6,
                                 rope_parameters=dict(rope_type="default", rope_theta=500000.0))
    model = transformers.LlamaForCausalLM(c)
  with torch.no_grad():                     # every tensor random: norms and biases are tested too
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.2 + (p == 1).all())
  return model.eval()


def hf_logits(model, x):
  with torch.no_grad():
    return model(torch.as_tensor(x, dtype=torch.long)).logits.numpy()


@pytest.mark.skipif(HF_MISSING is not None, reason=str(HF_MISSING))
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hf_import_and_export_round_trip(tmp_path, corpus, arch, capsys):
  hf = random_hf_model(arch)
  hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB")      # several files + an index
  assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
  x = tokens()
  ref = hf_logits(hf, x)
  run = tmp_path / "run"
  assert export.main(["--import", str(tmp_path / "hf"), "--workdir", str(run), "data.source=text",
                      f"data.path={corpus}", *SMALL[6:]]) == 0
  assert "train.py --config" in capsys.readouterr().out
  cfg, _, params = export_io.restore_params(run)
  assert cfg.model.tie_embeddings == (arch == "gpt2")
  np.testing.assert_allclose(logits(cfg.model, jax.device_get(params), x), ref, atol=1e-5, rtol=0)
  assert export.main(["--workdir", str(run), "--format", "hf", "--out", str(tmp_path / "back")]) == 0
  cls = transformers.GPT2LMHeadModel if arch == "gpt2" else transformers.LlamaForCausalLM
  back = cls.from_pretrained(tmp_path / "back").eval()
  np.testing.assert_allclose(hf_logits(back, x), ref, atol=1e-5, rtol=0)
  sd, sd_back = hf.state_dict(), back.state_dict()
  for k, v in sd.items():                   # the layouts are exact: tensors equal bit for bit
    np.testing.assert_array_equal(sd_back[k].numpy(), v.numpy(), err_msg=k)
