"""The typed experiment config: frozen dataclasses, `key.path=value` overrides, early validation.

Every `configs/<name>.py` defines `get_config() -> Config`. Overrides are applied MaxText style:

    python train.py --config configs/quickstart.py train.steps=300 model.n_layers=2

Values are parsed to the field's declared type; unknown keys, bad values and impossible combinations
raise `ConfigError` naming the key (and, for a typo, the closest valid key) before anything compiles.

The types (ConfigError, the sections, ModelConfig, the field helpers) are configs/schema.py's, below
data/ and modelzoo/, which import them from there; this module, above those registries, loads,
overrides, validates and rebuilds a whole Config, and re-exports the types.

The model section is the dataclass of one model family (modelzoo/<family>/config.py, registered in
modelzoo/__init__.py), extending schema's ModelConfig with the fields that have an effect in that
family. `model.name` selects the family; an override `model.name=...` is applied before the others
and keeps the fields both families have. Fields declare their values (choice, positive, nonneg,
below_one); validate() checks them (and that every value has its field's type and every float is
finite), then the family's check(), then what spans sections.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import traceback
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from configs import schema
# The types and field helpers are configs/schema.py's (data/ and modelzoo/ import them from there);
# config files and the tools keep importing them from here.
from configs.schema import (DTYPES, TASK_SOURCES, CheckpointConfig, ConfigError,  # noqa: F401
                            DataConfig, MeshConfig, ModelConfig, TrainConfig, below_one,
                            check_fields, check_types, choice, nonneg, positive)


@dataclass(frozen=True)
class Config(schema.Config):
  # schema.Config with its default model, a family of the registry: schema cannot import modelzoo.
  model: ModelConfig = field(default_factory=lambda: model_config("decoder"))


# ---------------------------------------------------------------------------------------------
# Model configs by family name, and the two style presets (baselines). Everything stays overridable.

def model_config(name: str, **kw) -> ModelConfig:
  """The config of the model family `name` (modelzoo.REGISTRY) with these fields."""
  import modelzoo
  return modelzoo.model_config(name, **kw)


GPT2_STYLE = dict(norm="layernorm", norm_bias=True, pos="learned", mlp="gelu", use_bias=True,
                  tie_embeddings=True, norm_placement="pre")
LLAMA_STYLE = dict(norm="rmsnorm", norm_bias=False, pos="rope", mlp="swiglu", use_bias=False,
                   tie_embeddings=False, norm_placement="pre", norm_eps=1e-6)


def gpt2_style(name: str = "decoder", **kw) -> ModelConfig:
  """LayerNorm with bias, learned positions, GELU, tied embeddings (nanoGPT's GPT)."""
  return _styled(name, GPT2_STYLE, kw)


def llama_style(name: str = "decoder", **kw) -> ModelConfig:
  """RMSNorm, RoPE, SwiGLU, GQA, no biases, untied embeddings."""
  return _styled(name, LLAMA_STYLE, kw)


def _styled(name: str, style: dict, kw: dict) -> ModelConfig:
  """A family's config in a style: the style's fields the family has, then `kw`."""
  import modelzoo
  own = modelzoo.config_fields()[name]
  return model_config(name, **{**{k: v for k, v in style.items() if k in own}, **kw})


# ---------------------------------------------------------------------------------------------
# Loading and overrides.

def config_files(folder: str | Path = Path(__file__).parent) -> list[Path]:
  """The experiment files in configs/, each defining one get_config(): not this module, not
  schema.py, not __init__.py, and not the reproduction sweeps repro_*.py (benchmarks/reproduce.py
  runs those)."""
  return sorted(p for p in Path(folder).glob("*.py")
                if p.stem not in ("base", "schema", "__init__") and not p.stem.startswith("repro_"))


def load(path: str, overrides: typing.Sequence[str] = ()) -> Config:
  """Runs configs/<x>.py's get_config() (config files are trusted Python) and applies overrides.
  A file that fails to run, or returns no Config, is a ConfigError naming the file and line."""
  p = Path(path)
  if not p.is_file():
    raise ConfigError(f"--config {path!r}: no such file")
  spec = importlib.util.spec_from_file_location(f"_seqzoo_config_{p.stem}", p)
  mod = importlib.util.module_from_spec(spec)
  _run_config(path, lambda: spec.loader.exec_module(mod))
  if not hasattr(mod, "get_config"):
    raise ConfigError(f"--config {path!r} defines no get_config()")
  cfg = _run_config(path, mod.get_config)
  if not isinstance(cfg, Config):
    raise ConfigError(f"--config {path!r}: get_config() returned {_a(cfg)}, "
                      "not a configs.base.Config")
  return apply_overrides(cfg, overrides)


def _run_config(path: str, fn):
  """fn()'s result; an exception (but our own ConfigError, already one line) becomes one line
  naming the config file's line that raised it (or led to it)."""
  try:
    return fn()
  except ConfigError:
    raise
  except SyntaxError as e:
    where = f"{e.filename}:{e.lineno}"
    raise ConfigError(f"--config {path!r} failed: {where}: SyntaxError: {e.msg}") from None
  except Exception as e:  # noqa: BLE001 — arbitrary user code: whatever it raises, say where
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if Path(f.filename) == Path(path)] or frames
    where = f"{mine[-1].filename}:{mine[-1].lineno}"
    first = (str(e).splitlines() or [""])[0]
    raise ConfigError(f"--config {path!r} failed: {where}: {type(e).__name__}: {first}") from None


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
  """Applies `key.path=value` items in order, model.name first (it selects the model's fields)."""
  overrides = sorted(overrides, key=lambda o: not o.strip().startswith("model.name="))
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, value = item.split("=", 1)
    cfg = _set(cfg, key.strip(), value.strip(), cfg)
  return cfg


def all_keys(cfg=None) -> list[str]:
  """The settable keys of a config or a section (default: Config())."""
  return schema.all_keys(Config() if cfg is None else cfg)


def _set(cfg, key: str, raw: str, root: Config, full: str = ""):
  full = full or key
  head, _, rest = key.partition(".")
  if head not in {f.name for f in fields(cfg)}:
    raise ConfigError(unknown_key(full, root))
  sub = getattr(cfg, head)
  if dataclasses.is_dataclass(sub):
    if not rest:
      raise ConfigError(f"{full!r} is a section; set one of its fields, e.g. {full}.{all_keys(sub)[0]}")
    return replace(cfg, **{head: _set(sub, rest, raw, root, full)})
  if rest:
    raise ConfigError(unknown_key(full, root))
  if isinstance(cfg, ModelConfig) and head == "name":
    import modelzoo
    return modelzoo.as_family(cfg, raw)
  typ = typing.get_type_hints(type(cfg))[head]
  return replace(cfg, **{head: _parse(full, raw, typ)})


def unknown_key(key: str, cfg: Config) -> str:
  """schema.unknown_key, naming the other model families that have the field of a model key."""
  sec, _, name = key.partition(".")
  others = []
  if sec == "model":
    import modelzoo
    others = modelzoo.families_with(name)
  return schema.unknown_key(key, cfg, others)


def _parse(key: str, raw: str, typ):
  try:
    if typ is bool:
      low = raw.lower()
      if low in ("1", "true", "yes", "on"):
        return True
      if low in ("0", "false", "no", "off"):
        return False
      raise ValueError
    if typ is int:
      return int(raw)
    if typ is float:
      return float(raw)
    return raw
  except ValueError:
    raise ConfigError(f"'{key}={raw}': expected a value of type {typ.__name__}") from None


# ---------------------------------------------------------------------------------------------
# Validation: everything checkable before compilation.

def mesh_shape(cfg: MeshConfig, n_devices: int) -> dict[str, int]:
  sizes = {"data": cfg.data, "fsdp": cfg.fsdp, "tensor": cfg.tensor}
  bad = [k for k, v in sizes.items() if v == 0 or v < -1]
  if bad:
    raise ConfigError(f"mesh.{bad[0]}={sizes[bad[0]]}: mesh sizes are positive, or -1 for the rest")
  auto = [k for k, v in sizes.items() if v == -1]
  if len(auto) > 1:
    raise ConfigError(f"only one mesh axis may be -1, got {', '.join('mesh.' + a for a in auto)}")
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if auto:
    if n_devices % fixed:
      raise ConfigError(f"mesh {sizes} cannot fill {n_devices} devices: {n_devices} is not "
                        f"divisible by the fixed axes' product {fixed}")
    sizes[auto[0]] = n_devices // fixed
  if math.prod(sizes.values()) != n_devices:
    raise ConfigError(f"mesh data={sizes['data']} fsdp={sizes['fsdp']} tensor={sizes['tensor']} "
                      f"needs {math.prod(sizes.values())} devices but {n_devices} are available")
  return sizes


def validate(cfg: Config, n_devices: int) -> None:
  """Raises ConfigError for any impossible combination; called before anything is traced."""
  for sec in fields(cfg):
    if sec.name != "model":
      check_fields(getattr(cfg, sec.name), sec.name)
  m = cfg.model
  m.check()                              # the family's fields and their combinations
  if not 0.0 < cfg.data.val_fraction < 1.0:
    raise ConfigError(f"data.val_fraction={cfg.data.val_fraction} must be in (0, 1)")
  if m.pos == "learned" and cfg.data.seq_len > m.max_len:
    raise ConfigError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_len={m.max_len}, the size "
                      "of the learned position table")
  if cfg.data.task:
    from data import sources
    sources.check_task(cfg.data, m)      # the knobs (through data/tasks.py), lengths, vocab, d_in
  elif cfg.data.eval_seq_len or m.d_in:
    key = "data.eval_seq_len" if cfg.data.eval_seq_len else "model.d_in"
    raise ConfigError(f"{key} is for a task source (data.source={cfg.data.source!r})")
  if cfg.data.pack and not m.packing:
    raise ConfigError(f"data.pack=true: model.name={m.name!r} takes no packed sequences (its "
                      "recurrent state would cross document boundaries)")
  # Loosely: training/hardware.py knows the chips; a config only has to name one plausibly.
  if cfg.mesh.topology and not re.fullmatch(r"[a-z][a-z0-9]*:\d+(x\d+)+", cfg.mesh.topology):
    raise ConfigError(f"mesh.topology={cfg.mesh.topology!r} is not a slice name <chip>:<shape>, "
                      "e.g. v5e:2x2, v5p:2x2x1, h100:1x1x8")
  sizes = mesh_shape(cfg.mesh, n_devices)
  t = cfg.train
  if t.batch_size % t.grad_accum:
    raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by "
                      f"train.grad_accum={t.grad_accum}")
  dp = sizes["data"] * sizes["fsdp"]
  micro = t.batch_size // t.grad_accum
  if micro % dp:
    raise ConfigError(f"the micro-batch train.batch_size/train.grad_accum={micro} is not divisible "
                      f"by the data-parallel size mesh.data*mesh.fsdp={dp}")
  split = {k: getattr(m, k) for k in ("n_heads", "d_ff") if hasattr(m, k)}   # tensor-parallel
  if any(v % sizes["tensor"] for v in split.values()):
    raise ConfigError(f"mesh.tensor={sizes['tensor']} must divide "
                      + " and ".join(f"model.{k}={v}" for k, v in split.items()))
  if t.warmup_steps > t.steps:
    raise ConfigError(f"train.warmup_steps={t.warmup_steps} exceeds train.steps={t.steps}")
  if t.min_lr > t.lr:
    raise ConfigError(f"train.min_lr={t.min_lr} exceeds train.lr={t.lr}")


def to_dict(cfg: Config) -> dict:
  return dataclasses.asdict(cfg)


def to_json(cfg: Config) -> str:
  return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def from_dict(d: dict) -> Config:
  """Inverse of to_dict (used to rebuild a run's config from its config.json). A config.json of
  the wrong shape or with a value of the wrong type is a ConfigError naming the key."""
  if not isinstance(d, dict):
    raise ConfigError(f"config.json holds {_a(d)}, not a dict of sections")
  hints = typing.get_type_hints(Config)
  kw = {}
  for name, sub in d.items():
    if name not in hints:
      raise ConfigError(f"config.json has an unknown section {name!r}")
    if not isinstance(sub, dict):
      raise ConfigError(f"config.json section {name!r} is {sub!r}, not a dict of fields")
    kw[name] = check_types(_section_from_dict(name, sub), name, " in config.json")
  return Config(**kw)


def _section_from_dict(name: str, sub: dict):
  if name == "model":
    import modelzoo
    family = sub.get("name", "decoder")
    if not isinstance(family, str):
      raise ConfigError(f"model.name={family!r} in config.json is not of type str")
    return modelzoo.config_from_dict(sub)
  cls = typing.get_type_hints(Config)[name]
  unknown = set(sub) - {f.name for f in fields(cls)}
  if unknown:
    raise ConfigError(f"config.json has unknown keys {sorted(unknown)} in section {name!r}")
  return cls(**sub)


def _a(v) -> str:
  """'a list', 'None': the kind of a value, in a message."""
  return "None" if v is None else f"a {type(v).__name__}"
