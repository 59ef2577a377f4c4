"""Parameters in and out of runs: flat named tensors, params-only restores, imported runs.

    cfg, step, params = restore_params(workdir)   # on the run's own mesh (workdir.restore_mesh)
    cfg, step, params = restore_params(workdir, param_dtype="bfloat16", mesh=mesh)  # any mesh
    save_safetensors(out_dir, params, cfg)     # model.safetensors + config.json (+ tokenizer.json)
    cfg, params = load_safetensors(out_dir)
    write_run(workdir, cfg, params)            # a step-0 checkpoint that train.py resumes from

Tensor names join the parameter tree's keys with "." (e.g. `layers.attn.query.kernel`), so the flat
file is the tree exactly as the model holds it (scanned layers keep their leading layer axis).
"""
from __future__ import annotations

import json
import os
import pprint
import shutil
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
from safetensors import numpy as st_np

import modelzoo
from configs import base
from configs.base import ConfigError
from data import pipeline, tokenize
from layers import sharding, sigma_reparam
from training import step as step_lib
from training import workdir as workdir_lib
from training.checkpoint import Checkpointer

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

def restore_params(workdir: Path, step: int | None = None, param_dtype: str | None = None,
                   mesh=None, allow_unverified: bool = False):
  """(cfg, step, params): only the parameters of a checkpoint (no optimizer state is read), placed
  with the model's logical shardings on `mesh` (default: the run's own, workdir.restore_mesh),
  through the checkpointer's one restore (checksums verified, a bad checkpoint skipped for the
  previous one, the workdir left as it is), then cast to `param_dtype` (e.g. "bfloat16" for
  serving). The config's param_dtype is updated; its mesh stays the run's. A σReparam run comes
  back folded (`served`): kernels gamma / sigma(W) * W, the config without σReparam."""
  workdir = Path(workdir)
  cfg = workdir_lib.read_config(workdir)
  if mesh is None:
    mesh = workdir_lib.restore_mesh(cfg)
  stored, buffers = workdir_lib.variable_targets(cfg.model, cfg.data.seq_len, mesh)  # as saved
  if param_dtype is not None:
    cfg = base.apply_overrides(cfg, [f"model.param_dtype={param_dtype}"])
    base.validate(workdir_lib.on_mesh(cfg, mesh), mesh.size)
  ckpt = Checkpointer(workdir, cfg.ckpt.every, cfg.ckpt.keep, read_only=True)
  try:
    steps = ckpt.steps()
    if not steps:
      raise ConfigError(f"--workdir {workdir}: no checkpoint in {ckpt.dir}")
    if step is not None and step not in steps:
      raise ConfigError(f"--step {step}: no such checkpoint in {ckpt.dir} (have {steps})")
    step, params, buffers = ckpt.restore_params(stored, step, allow_unverified, buffers)
  finally:
    ckpt.close()
  if buffers:
    cfg = served(cfg)
    params = jax.jit(sigma_reparam.fold, out_shardings=jax.tree.map(
        lambda t: t.sharding, workdir_lib.param_target(cfg.model, cfg.data.seq_len, mesh)))(
            params, buffers)
  if param_dtype is not None:
    params = cast(params, workdir_lib.param_target(cfg.model, cfg.data.seq_len, mesh))
  return cfg, step, params


def served(cfg: base.Config) -> base.Config:
  """The config of what restore_params returns: the same function, without model state that
  only training updates (σReparam's kernels come folded, so HF and StableHLO need no u, v)."""
  if getattr(cfg.model, "sigma_reparam", False):
    return base.apply_overrides(cfg, ["model.sigma_reparam=false"])
  return cfg


def cast(params, target):
  """params in `target`'s dtypes and shardings. The checksums are of the stored bits, so a cast
  follows the verified read: both copies exist on the devices for this one call."""
  return jax.jit(lambda p: jax.tree.map(lambda x, t: x.astype(t.dtype), p, target),
                 out_shardings=jax.tree.map(lambda t: t.sharding, target))(params)


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


def read_json(path: Path) -> dict:
  """An imported folder's JSON object file (config.json, an index), or one line naming it."""
  try:
    out = json.loads(Path(path).read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} cannot be read as JSON ({type(e).__name__}: {e})") from None
  if not isinstance(out, dict):
    raise ConfigError(f"{path} holds a JSON {type(out).__name__}, not an object")
  return out


def load_tensors(path: Path) -> dict[str, np.ndarray]:
  """A safetensors file's tensors, or one line naming it (truncated or corrupt files included)."""
  try:
    return st_np.load_file(path)
  except (OSError, safetensors.SafetensorError) as e:
    raise ConfigError(f"{path} is not a readable safetensors file "
                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_safetensors(src: Path, overrides=()) -> tuple[base.Config, dict]:
  """A folder written by save_safetensors -> (cfg, params as numpy), checked against the model."""
  src = Path(src)
  cfg = base.apply_overrides(base.from_dict(read_json(src / "config.json")), overrides)
  if not (src / WEIGHTS).is_file():
    raise ConfigError(f"{src}: no {WEIGHTS}")
  params = unflatten(load_tensors(src / WEIGHTS))
  check_like(params, cfg.model, str(src / WEIGHTS))
  return cfg, params


# ---------------------------------------------------------------------------------------------
# An imported run: config.json, a config file for train.py, tokenizer, a step-0 checkpoint.

def write_run(workdir: Path, cfg: base.Config, params, tokenizer_src: Path | None = None) -> Path:
  """Makes `workdir` a run that train.py resumes from step 0 with these parameters.

  The optimizer state is fresh (tx.init); the data iterator state is that of a fresh iterator.
  Returns the generated config file to pass to `train.py --config`.
  """
  workdir = Path(workdir)
  if (workdir / "checkpoints").exists() and workdir_lib.checkpoint_steps(workdir):
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
  mesh = workdir_lib.restore_mesh(cfg)     # validated above: the mesh train.py will resume on
  model = modelzoo.build(cfg.model)
  tx, _ = step_lib.make_optimizer(cfg.train)
  make, rng, abstract, state_sh = step_lib.init_state(model, tx, cfg, mesh)
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
