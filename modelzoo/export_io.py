"""Parameters in and out of runs: flat named tensors, params-only restores, imported runs.

    cfg, step, params = restore_params(workdir)        # on the run's own mesh (restore_mesh)
    cfg, step, params = restore_params(workdir, param_dtype="bfloat16", mesh=mesh)  # any mesh
    save_safetensors(out_dir, params, cfg)     # model.safetensors + config.json (+ tokenizer.json)
    cfg, params = load_safetensors(out_dir)
    write_run(workdir, cfg, params)            # a step-0 checkpoint that train.py resumes from

Tensor names join the parameter tree's keys with "." (e.g. `layers.attn.query.kernel`), so the flat
file is the tree exactly as the model holds it (scanned layers keep their leading layer axis).
"""
from __future__ import annotations

import json
import math
import os
import pprint
import shutil
import sys
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from safetensors import numpy as st_np

import modelzoo
from configs import base
from configs.base import ConfigError
from layers import sharding

WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------------------------
# Flat names.

def flatten(tree) -> dict[str, np.ndarray]:
  flat = flax.traverse_util.flatten_dict(tree)
  return {".".join(k): np.asarray(v) for k, v in flat.items()}


def unflatten(flat: dict) -> dict:
  return flax.traverse_util.unflatten_dict({tuple(k.split(".")): v for k, v in flat.items()})


def abstract_params(model_cfg, seq_len: int = 8) -> dict:
  """ShapeDtypeStructs of the model's parameter tree (nothing is computed)."""
  model = modelzoo.build(model_cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, seq_len), jnp.int32)))
  return flax.linen.unbox(boxed)["params"]


def check_like(params, model_cfg, what: str) -> None:
  """ConfigError unless `params` has exactly the names and shapes the model expects."""
  want = {k: tuple(v.shape) for k, v in flatten_shapes(abstract_params(model_cfg)).items()}
  have = {k: tuple(np.shape(v)) for k, v in flatten_shapes(params).items()}
  for k in sorted(set(want) | set(have)):
    if want.get(k) != have.get(k):
      raise ConfigError(f"{what}: tensor {k!r} is {have.get(k, 'missing')} but model "
                        f"{model_cfg.name!r} with this config needs {want.get(k, 'no such tensor')}")


def flatten_shapes(tree) -> dict:
  return {".".join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


# ---------------------------------------------------------------------------------------------
# Restoring a run's parameters.

def read_config(workdir: Path) -> base.Config:
  f = Path(workdir) / "config.json"
  if not f.exists():
    raise ConfigError(f"--workdir {workdir}: no config.json (not a seqzoo run directory)")
  return base.from_dict(json.loads(f.read_text()))


def checkpoint_steps(workdir: Path) -> list[int]:
  """Finished checkpoints (orbax writes `<step>.orbax-checkpoint-tmp-*` first, then renames)."""
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.glob("*") if p.name.isdigit() and (p / "state").is_dir())


def restore_mesh_shape(mesh_cfg: base.MeshConfig, n_devices: int) -> tuple[dict, str | None]:
  """(sizes, note): the mesh a run's parameters are restored onto on n_devices. The run's own mesh
  (its config's mesh, -1 resolved) when n_devices can hold it, note None. Otherwise (a pod run on
  a laptop) tensor and fsdp keep their largest divisors that divide the devices, and data takes
  the rest: parameters stay sharded as far as the devices allow, and a divisor of mesh.tensor
  still divides the heads and widths the run was validated with. The note says so, in one line."""
  try:
    return base.mesh_shape(mesh_cfg, n_devices), None
  except ConfigError as e:
    why = str(e)
  tensor = math.gcd(max(mesh_cfg.tensor, 1), n_devices)
  fsdp = math.gcd(max(mesh_cfg.fsdp, 1), n_devices // tensor)
  sizes = dict(data=n_devices // (tensor * fsdp), fsdp=fsdp, tensor=tensor)
  return sizes, (f"the run's {why}: restoring onto mesh "
                 + " ".join(f"{k}={v}" for k, v in sizes.items()) + " instead")


def restore_mesh(cfg: base.Config, devices=None) -> jax.sharding.Mesh:
  """The mesh eval.py, export.py and --import restore a run onto (restore_mesh_shape) over
  `devices` (default: all; a topology's for --aot); a fallback is noted on stderr."""
  devices = jax.devices() if devices is None else list(devices)
  sizes, note = restore_mesh_shape(cfg.mesh, len(devices))
  if note:
    print(f"note: {note}", file=sys.stderr)
  return sharding.make_mesh(sizes, devices)


def on_mesh(cfg: base.Config, mesh: jax.sharding.Mesh) -> base.Config:
  """cfg with `mesh`'s sizes and a batch divisible by its data-parallel size (rounded down, at
  least one row per data shard), e.g. to evaluate a pod run on fewer devices."""
  sizes = dict(mesh.shape)
  dp, b = sizes["data"] * sizes["fsdp"], cfg.train.batch_size
  return base.apply_overrides(cfg, [f"mesh.{k}={v}" for k, v in sizes.items()]
                              + [f"train.batch_size={b - b % dp or dp}", "train.grad_accum=1"])


def param_target(model_cfg, seq_len: int, mesh: jax.sharding.Mesh) -> dict:
  """ShapeDtypeStructs of the parameters with the model's logical shardings on `mesh`."""
  model = modelzoo.build(model_cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                            jnp.zeros((1, seq_len), jnp.int32))["params"])
  shardings = sharding.shardings(boxed, mesh)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      flax.linen.unbox(boxed), shardings)


def restore_params(workdir: Path, step: int | None = None, param_dtype: str | None = None,
                   mesh=None):
  """(cfg, step, params): only the parameters of a checkpoint (no optimizer state is read), placed
  with the model's logical shardings on `mesh` (default: restore_mesh, the run's own) and cast to
  `param_dtype` as they are read (e.g. "bfloat16" for serving). The config's param_dtype is updated;
  its mesh stays the run's."""
  workdir = Path(workdir)
  cfg = read_config(workdir)
  if mesh is None:
    mesh = restore_mesh(cfg)
  if param_dtype is not None:
    cfg = base.apply_overrides(cfg, [f"model.param_dtype={param_dtype}"])
    base.validate(on_mesh(cfg, mesh), mesh.size)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise ConfigError(f"--workdir {workdir}: no checkpoint in {workdir / 'checkpoints'}")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ConfigError(f"--step {step}: no such checkpoint in {workdir / 'checkpoints'} (have {steps})")
  target = {"params": param_target(cfg.model, cfg.data.seq_len, mesh)}
  # A params-only partial read: the ArrayRestoreArgs built from `target` carry the wanted dtype,
  # so orbax casts while reading and the full-precision copy never exists on the devices.
  with ocp.PyTreeCheckpointer() as ckptr:
    out = ckptr.restore(workdir.absolute() / "checkpoints" / str(step) / "state",
                        args=ocp.args.PyTreeRestore(
                            item=target, partial_restore=True,
                            restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
  return cfg, step, out["params"]


# ---------------------------------------------------------------------------------------------
# The flat safetensors format (ours).

def save_file(tensors: dict, path: Path, metadata: dict) -> None:
  """safetensors' save_file, but with the mode of any other new file (0644 under umask 022):
  save_file creates owner-only files (0600), and an export is usually meant to be shared."""
  st_np.save_file(tensors, path, metadata=metadata)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def save_safetensors(out: Path, params, cfg: base.Config, workdir: Path | None = None,
                     meta: dict | None = None) -> Path:
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  save_file(flatten(jax.device_get(params)), out / WEIGHTS,
            metadata={"format": "seqzoo", **{k: str(v) for k, v in (meta or {}).items()}})
  (out / "config.json").write_text(base.to_json(cfg))
  copy_tokenizer(workdir, out)
  return out


def copy_tokenizer(workdir: Path | None, out: Path) -> None:
  if workdir is not None and (Path(workdir) / "tokenizer.json").is_file():
    shutil.copyfile(Path(workdir) / "tokenizer.json", Path(out) / "tokenizer.json")


def load_safetensors(src: Path, overrides=()) -> tuple[base.Config, dict]:
  """A folder written by save_safetensors -> (cfg, params as numpy), checked against the model."""
  src = Path(src)
  cfg = base.apply_overrides(base.from_dict(json.loads((src / "config.json").read_text())), overrides)
  if not (src / WEIGHTS).is_file():
    raise ConfigError(f"{src}: no {WEIGHTS}")
  params = unflatten(st_np.load_file(src / WEIGHTS))
  check_like(params, cfg.model, str(src / WEIGHTS))
  return cfg, params


# ---------------------------------------------------------------------------------------------
# An imported run: config.json, a config file for train.py, tokenizer, a step-0 checkpoint.

def write_run(workdir: Path, cfg: base.Config, params, tokenizer_src: Path | None = None) -> Path:
  """Makes `workdir` a run that train.py resumes from step 0 with these parameters.

  The optimizer state is fresh (tx.init); the data iterator state is that of a fresh iterator.
  Returns the generated config file to pass to `train.py --config`.
  """
  import train                          # top-level module: the repo root is the workspace
  from data import pipeline, tokenize
  from modelzoo.checkpoint import Checkpointer
  workdir = Path(workdir)
  if (workdir / "checkpoints").exists() and checkpoint_steps(workdir):
    raise ConfigError(f"--workdir {workdir} already holds checkpoints; import into a new workdir")
  base.validate(cfg, jax.device_count())
  modelzoo.check(cfg.model)
  check_like(params, cfg.model, "imported parameters")
  workdir.mkdir(parents=True, exist_ok=True)
  copy_tokenizer(tokenizer_src, workdir)    # then build_tokenizer reuses it, as train.py will
  tok = tokenize.build_tokenizer(cfg.data, workdir)
  if tok.vocab_size > cfg.model.vocab_size:
    raise ConfigError(f"the {tok.name} tokenizer has {tok.vocab_size} ids but the imported model "
                      f"has model.vocab_size={cfg.model.vocab_size}")
  tok.save(workdir)
  n_proc = jax.process_count()
  it = pipeline.build_dataset(cfg.data, tok, "train", batch_size=cfg.train.batch_size // n_proc,
                              seed=cfg.train.seed, process_index=jax.process_index(),
                              process_count=n_proc)
  data_state = it.get_state()
  mesh = restore_mesh(cfg)          # validated above: the mesh train.py will resume on
  model = modelzoo.build(cfg.model)
  tx, _ = train.make_optimizer(cfg.train)
  make, rng, abstract, state_sh = train.init_state(model, tx, cfg, mesh)
  params = jax.tree.map(lambda p, a: jax.device_put(np.asarray(p).astype(a.dtype), a.sharding),
                        params, abstract.params)
  # Every other field (step 0, rng, counters) as a fresh run has them; the optimizer state is
  # tx.init of the imported parameters, with the train state's shardings. Traced on the mesh:
  # the model's kernels in init run per shard.
  with sharding.activate(mesh):
    state = make(rng).replace(params=params)
    state = state.replace(opt_state=jax.jit(tx.init, out_shardings=state_sh.opt_state)(params))
  (workdir / "config.json").write_text(base.to_json(cfg))
  conf = workdir / "imported_config.py"
  conf.write_text(CONFIG_FILE.format(config=pprint.pformat(base.to_dict(cfg), sort_dicts=False)))
  ck = Checkpointer(workdir, cfg.ckpt.every, cfg.ckpt.keep, async_save=False)
  ck.save(0, state, data_state, force=True)
  ck.close()
  return conf


CONFIG_FILE = '''"""Written by export.py --import: the imported model with its data and train settings.

    python train.py --config {{this file}} --workdir {{its directory}} [train.* overrides]
"""
from configs import base

CONFIG = {config}


def get_config():
  return base.from_dict(CONFIG)
'''
