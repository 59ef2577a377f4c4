"""The model zoo: model families by name, each with its config class and its model.

    cfg.model = modelzoo.model_config("mamba", d_model=768, ...)   # or configs.base, config files
    model = modelzoo.build(cfg.model)            # a flax.linen Module
    logits_BTV = model.apply({"params": p}, tokens_BT, positions_BT, segment_ids_BT)
"""
from __future__ import annotations

import difflib
import functools
import importlib
from dataclasses import fields

from configs.schema import Config, ConfigError, unknown_key

# name -> ("module:ConfigClass", "module:ModelClass"), one folder per family; imported lazily so
# that one model's dependencies never break another and loading a config imports no model. The
# config class (modelzoo/<family>/config.py) extends configs.schema.ModelConfig: its fields, derived
# values and check(). The model module (modelzoo/<family>/model.py; modelzoo/common.py holds the
# config -> layers translations families share) defines
#   flops_per_token(model_cfg, n_params, seq_len) model FLOPs of one training token
#   kernel_flops_per_token(model_cfg, seq_len)   the part of those inside the kernels (attention,
#                                                scans): invisible to XLA in a Pallas custom call
# and may define
#   layer_unit(model_cfg)                        layers in the unit the stack repeats (default 1)
REGISTRY = {
    "decoder": ("modelzoo.decoder.config:DecoderConfig", "modelzoo.decoder.model:DecoderLM"),
    "dual_stream": ("modelzoo.dual_stream.config:DualStreamConfig",
                    "modelzoo.dual_stream.model:DualStreamLM"),
    "deltanet": ("modelzoo.deltanet.config:DeltaNetConfig", "modelzoo.deltanet.model:DeltaNetLM"),
    "mamba": ("modelzoo.mamba.config:MambaConfig", "modelzoo.mamba.model:MambaLM"),
    "mamba2": ("modelzoo.mamba2.config:Mamba2Config", "modelzoo.mamba2.model:Mamba2LM"),
}


def _load(where: str):
  mod, attr = where.split(":")
  return getattr(importlib.import_module(mod), attr)


def _family(name: str) -> tuple[str, str]:
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"model.name={name!r} is not a known model {sorted(REGISTRY)}{hint}")
  return REGISTRY[name]


def config_class(name: str) -> type:
  return _load(_family(name)[0])


@functools.cache
def config_fields() -> dict[str, frozenset]:
  """Each family's settable fields."""
  return {n: frozenset(f.name for f in fields(config_class(n)) if f.init) for n in REGISTRY}


def model_config(name: str, **kw):
  """The config of family `name` with these fields (an unknown one is a ConfigError)."""
  cls = config_class(name)
  for k in kw:
    if k not in config_fields()[name]:
      raise ConfigError(unknown_key(f"model.{k}", Config(model=cls()), families_with(k)))
  return cls(**kw)


def families_with(field_name: str) -> list[str]:
  """The families that have the settable field `field_name` (named in an unknown key's error)."""
  return [n for n, own in config_fields().items() if field_name in own]


def as_family(m, name: str):
  """`m` as a config of family `name`: the fields both have keep their values."""
  if name == m.name:
    return m
  _family(name)
  return model_config(name, **{k: getattr(m, k)
                               for k in config_fields()[m.name] & config_fields()[name]})


def config_from_dict(d: dict):
  """A family's config from a config.json model section. Runs saved before each family had its
  own config hold every family's fields (one flat ModelConfig): the fields of other families had
  no effect on this one and are dropped."""
  d = dict(d)
  name = d.pop("name", "decoder")
  if d.pop("hybrid_norm", False):     # saved before hybrid-norm became norm_placement=peri
    d["norm_placement"] = "peri"
  _family(name)
  own = config_fields()[name]
  unknown = set(d) - own - frozenset().union(*config_fields().values())
  if unknown:
    raise ConfigError(f"config.json has unknown keys {sorted(unknown)} in section 'model'")
  return config_class(name)(**{k: v for k, v in d.items() if k in own})


def check(model_cfg) -> None:
  """Raises ConfigError naming the offending key (the family's check(), before any tracing)."""
  model_cfg.check()


def build(model_cfg, decode: bool = False):
  return _load(_family(model_cfg.name)[1])(model_cfg, decode=decode)


def _hooks(model_cfg):
  return importlib.import_module(_family(model_cfg.name)[1].split(":")[0])


def flops_per_token(model_cfg, n_params: int, seq_len: int) -> float:
  return _hooks(model_cfg).flops_per_token(model_cfg, n_params, seq_len)


def kernel_flops_per_token(model_cfg, seq_len: int) -> float:
  return _hooks(model_cfg).kernel_flops_per_token(model_cfg, seq_len)


def layer_unit(model_cfg) -> int:
  mod = _hooks(model_cfg)
  return mod.layer_unit(model_cfg) if hasattr(mod, "layer_unit") else 1
