"""A run's directory: its config.json, its checkpoints, the mesh and shardings it restores onto.

    check_workdir(workdir, cfg)             # train.py, first: one run per workdir; writes nothing
    claim_workdir(workdir, cfg, tok, lead)  # train.py, once every check passed: config.json
    cfg = read_config(workdir)
    mesh = restore_mesh(cfg)                # the run's own mesh, or the nearest these devices hold
    cfg = on_mesh(cfg, mesh)                # its sizes and a batch that mesh divides
    target = param_target(cfg.model, cfg.data.seq_len, mesh)   # what a params restore produces

eval.py, export.py and export.py --import restore runs through these; train.py resumes on its
config's own mesh (a checkpoint restores onto any mesh: training/checkpoint.py).
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import flax
import jax

import modelzoo
from configs import base
from configs.base import ConfigError
from layers import sharding
from modelzoo import common


def check_workdir(workdir: Path, cfg: base.Config):
  """Refuses, writing nothing, a workdir this run cannot have: one that cannot be a directory, or
  that holds another run (a workdir belongs to one run: its model and data never change)."""
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"--workdir {workdir} is not a directory")
  parent = next(p for p in (workdir, *workdir.absolute().parents) if p.exists())
  if not parent.is_dir():
    raise ConfigError(f"--workdir {workdir} cannot be created: {parent} is not a directory")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir {workdir} is not writable ({parent}: permission denied)")
  f = workdir / "config.json"
  if not f.exists():
    return
  old = config_dict(f)
  new = base.to_dict(cfg)
  if isinstance(old.get("model"), dict):    # as this code reads it: older runs saved every
    old["model"] = base.to_dict(from_dict(f, {"model": old["model"]}))["model"]   # family's
  for sec in ("model", "data"):
    if old.get(sec) != new[sec]:
      have = old[sec] if isinstance(old.get(sec), dict) else {}
      diff = sorted(k for k in set(new[sec]) | set(have) if have.get(k) != new[sec].get(k))
      raise ConfigError(f"workdir {workdir} holds another run (its config.json differs in "
                        f"{', '.join(f'{sec}.{k}' for k in diff)}); use a new --workdir")


def claim_workdir(workdir: Path, cfg: base.Config, tok, lead: bool):
  """Makes `workdir` this run's, once every check passed (check_workdir first): creates it, and
  the lead process (the workdir is shared) writes config.json and the tokenizer file."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    if lead:
      tmp = workdir / f"config.json.{os.getpid()}.tmp"    # a crash never leaves half a file
      tmp.write_text(base.to_json(cfg))
      tmp.replace(workdir / "config.json")
      if tok is not None:     # a task source has no tokenizer (data/tokenize.py)
        tok.save(workdir)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir} is not writable: {e.strerror or e}") from None


def read_config(workdir: Path) -> base.Config:
  f = Path(workdir) / "config.json"
  if not f.exists():
    raise ConfigError(f"--workdir {workdir}: no config.json (not a seqzoo run directory)")
  return from_dict(f, config_dict(f))


def config_dict(f: Path) -> dict:
  """The JSON object in config file `f`; anything else (binary, not JSON, a list) is one error."""
  try:
    d = json.loads(f.read_bytes().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{f} is not a seqzoo config.json ({e}); use a new --workdir") from None
  except OSError as e:
    raise ConfigError(f"{f} cannot be read: {e.strerror or e}") from None
  if not isinstance(d, dict):
    raise ConfigError(f"{f} is not a seqzoo config.json (a JSON {type(d).__name__}, not an "
                      "object); use a new --workdir")
  return d


def from_dict(f: Path, d: dict) -> base.Config:
  """base.from_dict, its errors naming the file they came from."""
  try:
    return base.from_dict(d)
  except ConfigError as e:
    raise ConfigError(f"{f}: {e}") from None
  except (TypeError, ValueError, KeyError, AttributeError) as e:   # until base.from_dict says it
    why = (str(e).strip().splitlines() or [""])[0][:200]
    raise ConfigError(f"{f} is not a seqzoo config.json ({type(e).__name__}: {why})") from None


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
  sizes = {"data": n_devices // (tensor * fsdp), "fsdp": fsdp, "tensor": tensor}
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
  return variable_targets(model_cfg, seq_len, mesh)[0]


def variable_targets(model_cfg, seq_len: int, mesh: jax.sharding.Mesh) -> tuple[dict, dict]:
  """(params, buffers) as param_target; buffers as TrainState.buffers holds them ({} for most
  models; σReparam's u, v)."""
  model = modelzoo.build(model_cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                            common.dummy_inputs(model_cfg, seq_len)))
  boxed = {"params": boxed["params"], "buffers": common.buffers(boxed)}
  shardings = sharding.shardings(boxed, mesh)
  out = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     flax.linen.unbox(boxed), shardings)
  return out["params"], out["buffers"]
