"""The typed experiment config: frozen dataclasses, `key.path=value` overrides, early validation.

Every `configs/<name>.py` defines `get_config() -> Config`. Overrides are applied MaxText style:

    python train.py --config configs/quickstart.py train.steps=300 model.n_layers=2

Values are parsed to the field's declared type; unknown keys, bad values and impossible combinations
raise `ConfigError` naming the key (and, for a typo, the closest valid key) before anything compiles.

The model section is the dataclass of one model family (modelzoo/<family>/config.py, registered in
modelzoo/__init__.py), extending ModelConfig below with the fields that have an effect in that
family. `model.name` selects the family; an override `model.name=...` is applied before the others
and keeps the fields both families have. Fields declare their values (choice, positive, nonneg,
below_one); validate() checks them (and that every value has its field's type and every float is
finite), then the family's check(), then what spans sections.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import re
import traceback
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import kernels


class ConfigError(ValueError):
  """A user error in a config or an override: printed without a traceback by train.py/eval.py."""


# ---------------------------------------------------------------------------------------------
# What a field's values may be, declared with the field and checked by check_fields. Every value
# must have its field's type, and every float must be finite (no field has a use for inf or NaN).

def choice(default, allowed: tuple):
  return field(default=default, metadata={"choices": tuple(allowed)})


def _in_range(default, says: str, ok):
  """A field whose values satisfy `ok` (NaN fails every comparison, so it never does)."""
  return field(default=default, metadata={"range": (says, ok)})


def positive(default):
  return _in_range(default, "> 0", lambda v: v > 0)


def nonneg(default):
  return _in_range(default, ">= 0", lambda v: v >= 0)


def below_one(default):
  """A decay rate such as Adam's b1, b2: 1 would never forget, more would diverge."""
  return _in_range(default, "in [0, 1)", lambda v: 0 <= v < 1)


def check_fields(section, prefix: str) -> None:
  """Raises ConfigError for a field of `section` of the wrong type, not finite, or outside its
  declared choices or range."""
  check_types(section, prefix)
  for f in fields(section):
    key, v = f"{prefix}.{f.name}", getattr(section, f.name)
    allowed = f.metadata.get("choices")
    if allowed is not None and v not in allowed:
      close = difflib.get_close_matches(str(v), [str(a) for a in allowed], n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"{key}={v!r} is not one of {allowed}{hint}")
    says, ok = f.metadata.get("range", ("", None))
    if isinstance(v, float) and not math.isfinite(v):
      raise ConfigError(f"{key}={v} must be a finite number" + (f" {says}" if says else ""))
    if ok is not None and not ok(v):
      raise ConfigError(f"{key}={v} must be {says}")


def check_types(section, prefix: str, where: str = ""):
  """`section` with ints in float fields made floats (JSON writes 1.0 as 1); ConfigError naming
  the key for a value not of its field's type. `where` says where the value came from."""
  hints, floats = typing.get_type_hints(type(section)), {}
  for f in fields(section):
    v, typ = getattr(section, f.name), hints[f.name]
    if typ is float and type(v) is int:
      floats[f.name] = float(v)
    elif not (isinstance(v, typ) and (typ is bool or not isinstance(v, bool))):
      raise ConfigError(f"{prefix}.{f.name}={v!r}{where} is not of type {typ.__name__}")
  return replace(section, **floats) if floats else section


DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ModelConfig:
  """What every model family has. A family's dataclass extends it (modelzoo/<family>/config.py),
  redeclaring `name`, and extends check()."""
  name: str = field(default="", init=False)   # the family (modelzoo.REGISTRY), fixed by the class
  vocab_size: int = positive(256)     # V
  d_model: int = positive(256)        # D
  n_layers: int = positive(4)         # L
  max_len: int = positive(256)        # learned-position table size; the default sequence length
  pos: str = choice("learned", ("learned", "rope", "none"))
  norm: str = choice("layernorm", ("layernorm", "rmsnorm"))
  norm_bias: bool = True
  norm_eps: float = positive(1e-5)
  tie_embeddings: bool = True
  attn_impl: str = choice("auto", kernels.IMPLS)   # the kernels' impl (attention and scans)
  init_std: float = nonneg(0.02)
  scan_layers: bool = True            # nn.scan over layers: compile time independent of depth
  remat: str = choice("none", ("none", "full", "dots"))   # dots: save matmul outputs only
  param_dtype: str = choice("float32", DTYPES)
  dtype: str = choice("float32", DTYPES)   # compute dtype

  packing: ClassVar[bool] = True      # the model takes packed sequences (data.pack, segment ids)
  # Width of a real-valued read-in (data.source=linear_regression: d+1); 0 = token ids. A family
  # that has one redeclares it as a field (the decoder: model.d_in). It lives in the model's config
  # because the parameter shapes are a function of the model config alone (restores, exports).
  d_in: ClassVar[int] = 0
  head_bias: ClassVar[bool] = False   # a bias on the untied head (the decoder: a field)

  @property
  def d_stream(self) -> int:
    """The residual stream's stored width: D, or D - 1 where the family keeps it compressed
    (the decoder's model.norm=crmsnorm)."""
    return self.d_model

  @property
  def dot_dtype(self) -> str:
    """The dtype of the matmuls' operands (accumulated in float32)."""
    return self.dtype

  def with_depth(self, n_layers: int) -> ModelConfig:
    """This model cut to its first n_layers layers (training/aot.py compiles such cuts)."""
    return replace(self, n_layers=n_layers)

  def check(self) -> None:
    """Raises ConfigError for a bad value or combination of the model's fields."""
    check_fields(self, "model")


TASK_SOURCES = ("mqar", "selective_copy", "induction", "phonebook", "linear_regression")


@dataclass(frozen=True)
class DataConfig:
  # text sources (data/sources.py), or a procedural task (data/tasks.py: no files, no tokenizer)
  source: str = choice("stdlib", ("stdlib", "text", "tokens", "arrayrecord") + TASK_SOURCES)
  path: str = ""                   # files or globs, comma-separated (text/tokens/arrayrecord)
  tokenizer: str = choice("byte", ("byte", "char", "bpe"))
  tokenizer_path: str = ""         # bpe: a tokenizer.json to load (else trained on the train split)
  bpe_vocab_size: int = 4096
  val_fraction: float = 0.1        # text: the last fraction of each file is validation
  seq_len: int = positive(256)     # T
  pack: bool = False               # pack documents with segment ids instead of one token stream
  # train windows: epochs (stride T, each epoch a permutation) | random (nanoGPT's: i.i.d.
  # uniformly random token offsets)
  sampling: str = choice("epochs", ("epochs", "random"))
  num_workers: int = 0             # grain worker processes (0 = in-process)
  # A task's knobs (data.source = a task), named as its dataclass in data/tasks.py names them and
  # validated by it; a knob the task does not have must stay at its default here. Ints: 0 = the
  # task's own default. data.seq_len is T, passed as the task's seq_len where it has one (mqar,
  # selective_copy, induction, phonebook: longer than the book pads) and checked against the
  # length the knobs fix where it has none (linear_regression: 2n interleaved, n concat).
  vocab_size: int = nonneg(0)      # V of a token task (model.vocab_size must be >= it)
  num_pairs: int = nonneg(0)       # mqar: key-value pairs
  num_queries: int = nonneg(0)     # mqar: keys queried (0 = all)
  power_a: float = positive(0.01)  # mqar: query gaps ~ (g+1)^(power_a-1)
  num_tokens: int = nonneg(0)      # selective_copy: data tokens to copy
  num_entries: int = nonneg(0)     # phonebook: entries in the book
  name_len: int = nonneg(0)        # phonebook: tokens per name
  number_len: int = nonneg(0)      # phonebook: tokens per number (the answer)
  d: int = nonneg(0)               # linear_regression: input dimension (model.d_in = d + 1)
  n: int = nonneg(0)               # linear_regression: points per sequence
  sigma: float = nonneg(0.0)       # linear_regression: label noise
  layout: str = choice("interleave", ("interleave", "concat"))   # linear_regression
  ridge_lambda: float = nonneg(0.1)   # linear_regression: the ridge baseline's lambda
  eta: float = positive(1.0)       # linear_regression: the 1-step GD baseline's learning rate
  eval_seq_len: int = nonneg(0)    # task: T of the val split (0 = data.seq_len): length extrapolation

  @property
  def task(self) -> bool:
    """Whether the source is a procedural task (data/tasks.py) rather than text."""
    return self.source in TASK_SOURCES


@dataclass(frozen=True)
class TrainConfig:
  steps: int = positive(1000)
  batch_size: int = positive(32)   # global batch, sequences per step (split over grad_accum)
  grad_accum: int = positive(1)
  lr: float = positive(3e-4)
  min_lr: float = nonneg(3e-5)
  warmup_steps: int = nonneg(100)
  schedule: str = choice("cosine", ("cosine", "linear", "constant"))
  b1: float = below_one(0.9)
  b2: float = below_one(0.95)
  eps: float = positive(1e-8)
  weight_decay: float = nonneg(0.1)
  clip_norm: float = nonneg(1.0)   # 0 disables clipping
  z_loss: float = nonneg(0.0)
  seed: int = 0
  log_every: int = positive(10)
  eval_every: int = positive(200)
  eval_steps: int = positive(10)
  max_bad_steps: int = nonneg(3)   # non-finite updates skipped in a row before stopping
  # Per-layer statistics in the train metrics (metrics.jsonl, TensorBoard: "<name>/<layer>"),
  # computed inside the step only when on (layers/stats.py):
  log_hidden_rms: bool = False     # RMS of each block's output hidden state
  log_act_nonzero: bool = False    # fraction of non-zero MLP activations per layer
  log_attn_entropy: bool = False   # attention entropy per layer and head (nats; materialises p)
  log_outliers: bool = False       # max |.| and kurtosis of each block's FFN output and output


@dataclass(frozen=True)
class MeshConfig:
  data: int = -1                   # -1: all devices not used by the other axes
  fsdp: int = 1
  tensor: int = 1
  cpu_devices: int = positive(1)   # CPU hosts: JAX devices to split the CPU into (data parallel
                                   # over cores; faster for small models); ignored on GPU/TPU
  # The slice the config is sized for (its mesh, remat, grad_accum): `train.py --aot <topology>`
  # compiles for it, docs/scale.md and tests/test_scale.py read it. "" = not sized for one.
  topology: str = ""               # <chip>:<shape>, e.g. v5e:2x2, v5p:2x2x1, h100:1x1x8


@dataclass(frozen=True)
class CheckpointConfig:
  every: int = positive(500)
  keep: int = positive(3)
  async_save: bool = True


@dataclass(frozen=True)
class Config:
  model: ModelConfig = field(default_factory=lambda: model_config("decoder"))
  data: DataConfig = field(default_factory=DataConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  mesh: MeshConfig = field(default_factory=MeshConfig)
  ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)


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
  __init__.py, and not the reproduction sweeps repro_*.py (benchmarks/reproduce.py runs those)."""
  return sorted(p for p in Path(folder).glob("*.py")
                if p.stem not in ("base", "__init__") and not p.stem.startswith("repro_"))


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
  cfg = Config() if cfg is None else cfg
  out = []
  for f in fields(cfg):
    v = getattr(cfg, f.name)
    out += [f"{f.name}.{k}" for k in all_keys(v)] if dataclasses.is_dataclass(v) else [f.name]
  return out


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
  """The error for an unknown key: the closest key of `cfg`, and for a field of other model
  families, which ones (then only a near-certain typo is suggested)."""
  sec, _, name = key.partition(".")
  others = []
  if sec == "model":
    import modelzoo
    others = [n for n, own in modelzoo.config_fields().items() if name in own]
  close = difflib.get_close_matches(key, all_keys(cfg), n=1, cutoff=0.85 if others else 0.6)
  msg = f"unknown config key '{key}'" + (f"; did you mean {close[0]!r}?" if close else "")
  if others:
    msg += (f" (model.{name} is only implemented for model.name="
            f"{' / '.join(repr(n) for n in others)}, not {cfg.model.name!r})")
  return msg


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
