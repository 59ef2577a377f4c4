"""The config's types, below everything that reads them: ConfigError, the field helpers and
check_fields, ModelConfig (which each modelzoo family extends), the sections, Config without its
default model, and the unknown-key error.

Nothing here knows the model families or the data sources, so data/ and modelzoo/ import these
from here; configs/base.py, above them, loads, overrides and validates a whole Config.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field, fields, replace
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
  # No default model here: the default is a family of modelzoo's registry (the decoder), which
  # only configs.base.Config, the Config that config files and the tools build, can name.
  model: ModelConfig
  data: DataConfig = field(default_factory=DataConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  mesh: MeshConfig = field(default_factory=MeshConfig)
  ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)


def all_keys(cfg) -> list[str]:
  """The settable keys of a config or a section."""
  out = []
  for f in fields(cfg):
    v = getattr(cfg, f.name)
    out += [f"{f.name}.{k}" for k in all_keys(v)] if dataclasses.is_dataclass(v) else [f.name]
  return out


def unknown_key(key: str, cfg: Config, others: typing.Sequence[str] = ()) -> str:
  """The error for an unknown key: the closest key of `cfg`, and for a model field that other
  families have (`others`, which only the registry knows), which ones (then only a near-certain
  typo is suggested)."""
  name = key.partition(".")[2]
  close = difflib.get_close_matches(key, all_keys(cfg), n=1, cutoff=0.85 if others else 0.6)
  msg = f"unknown config key '{key}'" + (f"; did you mean {close[0]!r}?" if close else "")
  if others:
    msg += (f" (model.{name} is only implemented for model.name="
            f"{' / '.join(repr(n) for n in others)}, not {cfg.model.name!r})")
  return msg
