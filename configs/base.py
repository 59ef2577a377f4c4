"""The typed experiment config: frozen dataclasses, `key.path=value` overrides, early validation.

Every `configs/<name>.py` defines `get_config() -> Config`. Overrides are applied MaxText style:

    python train.py --config configs/quickstart.py train.steps=300 model.n_layers=2

Values are parsed to the field's declared type; unknown keys, bad values and impossible combinations
raise `ConfigError` naming the key (and, for a typo, the closest valid key) before anything compiles.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import re
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


class ConfigError(ValueError):
  """A user error in a config or an override: printed without a traceback by train.py/eval.py."""


@dataclass(frozen=True)
class ModelConfig:
  name: str = "decoder"            # registry key in modelzoo (decoder, dual_stream, mamba, ...)
  vocab_size: int = 256            # V
  d_model: int = 256               # D
  n_layers: int = 4                # L
  n_heads: int = 4                 # H
  n_kv_heads: int = 0              # K (GQA/MQA); 0 means = n_heads
  d_head: int = 0                  # 0 means d_model // n_heads
  d_ff: int = 1024                 # F
  max_len: int = 256               # learned-position table size (and the default sequence length)
  norm: str = "layernorm"          # layernorm | rmsnorm
  norm_bias: bool = True
  norm_eps: float = 1e-5
  norm_placement: str = "pre"      # pre | post
  pos: str = "learned"             # learned | rope | none
  rope_theta: float = 10000.0
  mlp: str = "gelu"                # gelu | swiglu
  gelu_exact: bool = False         # erf GELU; the tanh form is much cheaper in the CPU backward
  use_bias: bool = True            # biases on attention/MLP projections
  tie_embeddings: bool = True
  attention: str = "softmax"       # softmax | sigmoid
  attn_impl: str = "auto"          # kernels impl: auto | xla | pallas | interpret
  init_std: float = 0.02
  scan_layers: bool = True         # nn.scan over layers: compile time independent of depth
  remat: str = "none"              # none | full | dots (save matmul outputs only)
  param_dtype: str = "float32"
  dtype: str = "float32"           # compute dtype: float32 | bfloat16
  # Operands of the decoder's matmuls (projections, attention kernel, MLP, head), accumulated in
  # float32 whatever it is; "" = dtype. bfloat16 with float32 activations is TPU's default matmul precision, and
  # on CPUs with AMX/AVX512-BF16 runs the dots ~3x faster than float32 (docs/shakespeare_char.md).
  matmul_dtype: str = ""
  # --- Dual-Stream Transformer (modelzoo/dual_stream.py) ---
  mix_v: str = "dense"             # head mixing of the V projection: dense | kronecker | independent
  mix_o: str = "dense"             # ... of the attention output projection O (same choices)
  mix_up: str = "dense"            # ... of the FFN up projection: dense | independent (per-head FFN)
  mix_down: str = "dense"          # ... of the FFN down projection: dense | independent
  cln: bool = True                 # channel-wise LayerNorm (one LN per head); False: LN over all of D
  v_norm: bool = True              # V reads CLN_v(x_t); False: the raw token stream x_t
  frozen_tokens: bool = False      # Frozen-Token-Stream: x_t stays the embedding, attention writes x_e
  kron_init: str = "identity"      # Kronecker M init: identity (I + N(0, init_std^2)) | normal
  # --- sigmoid attention and DeltaNet (modelzoo/deltanet.py, layers) ---
  qk_norm: bool = False            # QK-norm: q, k normalised per head (model.norm kind) before RoPE
  layer_scale: float = 0.0         # LayerScale: branch * per-channel gamma, this init; 0 = off
  hybrid_norm: bool = False        # hybrid-norm: x + Norm(f(Norm(x))) (pre-norm blocks only)
  dn_conv: int = 4                 # DeltaNet causal depthwise conv width on q, k, v; 0 = none
  dn_gate: bool = False            # DeltaNet output gate: RMSNorm(o) * SiLU(W_g x)
  dn_decay: bool = False           # gated delta rule: g = -exp(A_log) softplus(W_a x + dt_bias)
  dn_chunk: int = 64               # delta-rule chunk size C: 16 | 32 | 64
  dn_hybrid: str = "none"          # none | swa (window attn every other layer) | global (2 attn)
  dn_window: int = 512             # keys seen by a swa-hybrid attention layer (itself included)
  # --- Mamba, Mamba-2 and hybrids (modelzoo/mamba.py) ---
  d_state: int = 16                # N: SSM state size (per channel in Mamba-1, per head in Mamba-2)
  d_conv: int = 4                  # width of the causal depthwise conv before the scan
  expand: int = 2                  # E = expand * d_model, the mixer's inner width
  dt_rank: int = 0                 # R: Mamba-1 low-rank Δ projection; 0 = ceil(d_model / 16)
  dt_min: float = 0.001            # softplus(dt_bias) is initialised log-uniform in [dt_min, dt_max]
  dt_max: float = 0.1
  ssm_head_dim: int = 64           # P: Mamba-2 head dim (heads = E / P)
  ssm_groups: int = 1              # G: Mamba-2 B/C groups (heads share B, C within a group)
  ssm_chunk: int = 64              # scan chunk length (Mamba-2 on auto/pallas: power of two >= 16)
  layer_pattern: str = ""          # Mamba-2 hybrid, one char per layer: M mamba2, * attention,
                                   # - MLP (e.g. "M-M*-"); "" = n_layers x M. See modelzoo/mamba2.py


@dataclass(frozen=True)
class DataConfig:
  source: str = "stdlib"           # stdlib | text | tokens | arrayrecord
  path: str = ""                   # files or globs, comma-separated (text/tokens/arrayrecord)
  tokenizer: str = "byte"          # byte | char | bpe
  tokenizer_path: str = ""         # bpe: a tokenizer.json to load (else trained on the train split)
  bpe_vocab_size: int = 4096
  val_fraction: float = 0.1        # text: the last fraction of each file is validation
  seq_len: int = 256               # T
  pack: bool = False               # pack documents with segment ids instead of one token stream
  sampling: str = "epochs"         # train windows: epochs (stride T, each epoch a permutation) |
                                   # random (nanoGPT's: i.i.d. uniformly random token offsets)
  num_workers: int = 0             # grain worker processes (0 = in-process)


@dataclass(frozen=True)
class TrainConfig:
  steps: int = 1000
  batch_size: int = 32             # global batch, sequences per step (split over grad_accum)
  grad_accum: int = 1
  lr: float = 3e-4
  min_lr: float = 3e-5
  warmup_steps: int = 100
  schedule: str = "cosine"         # cosine | linear | constant
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float = 1.0           # 0 disables clipping
  z_loss: float = 0.0
  seed: int = 0
  log_every: int = 10
  eval_every: int = 200
  eval_steps: int = 10
  max_bad_steps: int = 3           # non-finite updates skipped in a row before stopping


@dataclass(frozen=True)
class MeshConfig:
  data: int = -1                   # -1: all devices not used by the other axes
  fsdp: int = 1
  tensor: int = 1
  cpu_devices: int = 1             # CPU hosts: JAX devices to split the CPU into (data parallel
                                   # over cores; faster for small models); ignored on GPU/TPU
  # The slice the config is sized for (its mesh, remat, grad_accum): `train.py --aot <topology>`
  # compiles for it, docs/scale.md and tests/test_scale.py read it. "" = not sized for one.
  topology: str = ""               # <chip>:<shape>, e.g. v5e:2x2, v5p:2x2x1, h100:1x1x8


@dataclass(frozen=True)
class CheckpointConfig:
  every: int = 500
  keep: int = 3
  async_save: bool = True


@dataclass(frozen=True)
class Config:
  model: ModelConfig = field(default_factory=ModelConfig)
  data: DataConfig = field(default_factory=DataConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  mesh: MeshConfig = field(default_factory=MeshConfig)
  ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)


CHOICES = {
    "model.norm": ("layernorm", "rmsnorm"),
    "model.norm_placement": ("pre", "post"),
    "model.pos": ("learned", "rope", "none"),
    "model.mlp": ("gelu", "swiglu"),
    "model.attention": ("softmax", "sigmoid"),
    "model.attn_impl": ("auto", "xla", "pallas", "interpret"),
    "model.remat": ("none", "full", "dots"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.dtype": ("float32", "bfloat16"),
    "model.matmul_dtype": ("", "float32", "bfloat16"),
    "data.source": ("stdlib", "text", "tokens", "arrayrecord"),
    "data.tokenizer": ("byte", "char", "bpe"),
    "data.sampling": ("epochs", "random"),
    "train.schedule": ("cosine", "linear", "constant"),
}


# ---------------------------------------------------------------------------------------------
# Style presets (the two baselines). Everything they set stays overridable.

def gpt2_style(**kw) -> ModelConfig:
  """LayerNorm with bias, learned positions, GELU, tied embeddings (nanoGPT's GPT)."""
  base = dict(norm="layernorm", norm_bias=True, pos="learned", mlp="gelu", use_bias=True,
              tie_embeddings=True, norm_placement="pre")
  return ModelConfig(**{**base, **kw})


def llama_style(**kw) -> ModelConfig:
  """RMSNorm, RoPE, SwiGLU, GQA, no biases, untied embeddings."""
  base = dict(norm="rmsnorm", norm_bias=False, pos="rope", mlp="swiglu", use_bias=False,
              tie_embeddings=False, norm_placement="pre", norm_eps=1e-6)
  return ModelConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------
# Loading and overrides.

def load(path: str, overrides: typing.Sequence[str] = ()) -> Config:
  """Runs configs/<x>.py's get_config() (config files are trusted Python) and applies overrides."""
  p = Path(path)
  if not p.is_file():
    raise ConfigError(f"--config {path!r}: no such file")
  spec = importlib.util.spec_from_file_location(f"_seqzoo_config_{p.stem}", p)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  if not hasattr(mod, "get_config"):
    raise ConfigError(f"--config {path!r} defines no get_config()")
  return apply_overrides(mod.get_config(), overrides)


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, value = item.split("=", 1)
    cfg = _set(cfg, key.strip(), value.strip())
  return cfg


def all_keys(cfg=Config()) -> list[str]:
  out = []
  for f in fields(cfg):
    v = getattr(cfg, f.name)
    out += [f"{f.name}.{k}" for k in all_keys(v)] if dataclasses.is_dataclass(v) else [f.name]
  return out


def _set(cfg, key: str, raw: str, full: str = ""):
  full = full or key
  head, _, rest = key.partition(".")
  if head not in {f.name for f in fields(cfg)}:
    raise ConfigError(_unknown(full))
  sub = getattr(cfg, head)
  if dataclasses.is_dataclass(sub):
    if not rest:
      raise ConfigError(f"{full!r} is a section; set one of its fields, e.g. {full}.{all_keys(sub)[0]}")
    return replace(cfg, **{head: _set(sub, rest, raw, full)})
  if rest:
    raise ConfigError(_unknown(full))
  typ = typing.get_type_hints(type(cfg))[head]
  return replace(cfg, **{head: _parse(full, raw, typ)})


def _unknown(key: str) -> str:
  close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  return f"unknown config key '{key}'{hint}"


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
  flat = {}
  for sec in fields(cfg):
    for f in fields(getattr(cfg, sec.name)):
      flat[f"{sec.name}.{f.name}"] = getattr(getattr(cfg, sec.name), f.name)
  for key, allowed in CHOICES.items():
    if flat[key] not in allowed:
      close = difflib.get_close_matches(str(flat[key]), allowed, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"{key}={flat[key]!r} is not one of {allowed}{hint}")
  positive = ["model.vocab_size", "model.d_model", "model.n_layers", "model.n_heads", "model.d_ff",
              "model.max_len", "data.seq_len", "train.steps", "train.batch_size", "train.grad_accum",
              "train.lr", "train.log_every", "train.eval_every", "train.eval_steps", "ckpt.every",
              "ckpt.keep", "mesh.cpu_devices"]
  for key in positive:
    if not flat[key] > 0:
      raise ConfigError(f"{key}={flat[key]} must be > 0")
  nonneg = ["model.n_kv_heads", "model.d_head", "train.min_lr", "train.warmup_steps",
            "train.weight_decay", "train.clip_norm", "train.z_loss", "train.max_bad_steps"]
  for key in nonneg:
    if flat[key] < 0:
      raise ConfigError(f"{key}={flat[key]} must be >= 0")
  if cfg.model.matmul_dtype and cfg.model.name != "decoder":
    raise ConfigError(f"model.matmul_dtype={cfg.model.matmul_dtype!r} is only implemented for "
                      f"model.name='decoder', not {cfg.model.name!r}")
  if not 0.0 < cfg.data.val_fraction < 1.0:
    raise ConfigError(f"data.val_fraction={cfg.data.val_fraction} must be in (0, 1)")
  m = cfg.model
  if not m.d_head and m.d_model % m.n_heads:
    raise ConfigError(f"model.n_heads={m.n_heads} does not divide model.d_model={m.d_model}")
  kv = m.n_kv_heads or m.n_heads
  if m.n_heads % kv:
    raise ConfigError(f"model.n_kv_heads={kv} does not divide model.n_heads={m.n_heads}")
  if m.pos == "learned" and cfg.data.seq_len > m.max_len:
    raise ConfigError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_len={m.max_len}, the size "
                      "of the learned position table")
  if m.pos == "rope" and (m.d_head or m.d_model // m.n_heads) % 2:
    raise ConfigError("RoPE needs an even head dimension")
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
  if m.n_heads % sizes["tensor"] or m.d_ff % sizes["tensor"]:
    raise ConfigError(f"mesh.tensor={sizes['tensor']} must divide model.n_heads={m.n_heads} and "
                      f"model.d_ff={m.d_ff}")
  if t.warmup_steps > t.steps:
    raise ConfigError(f"train.warmup_steps={t.warmup_steps} exceeds train.steps={t.steps}")
  if t.min_lr > t.lr:
    raise ConfigError(f"train.min_lr={t.min_lr} exceeds train.lr={t.lr}")


def to_dict(cfg: Config) -> dict:
  return dataclasses.asdict(cfg)


def to_json(cfg: Config) -> str:
  return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def from_dict(d: dict) -> Config:
  """Inverse of to_dict (used to rebuild a run's config from its config.json)."""
  secs = {f.name: f.type for f in fields(Config)}
  hints = typing.get_type_hints(Config)
  kw = {}
  for name, sub in d.items():
    if name not in secs:
      raise ConfigError(f"config.json has an unknown section {name!r}")
    cls = hints[name]
    known = {f.name for f in fields(cls)}
    unknown = set(sub) - known
    if unknown:
      raise ConfigError(f"config.json has unknown keys {sorted(unknown)} in section {name!r}")
    kw[name] = cls(**sub)
  return Config(**kw)
