"""The model zoo: models built by name from `config.model.name`.

    model = modelzoo.build(cfg.model)            # a flax.linen Module
    logits_BTV = model.apply({"params": p}, tokens_BT, positions_BT, segment_ids_BT)
"""
from __future__ import annotations

import difflib
import importlib

# name -> "module:Class"; imported lazily so one model's dependencies never break another.
REGISTRY = {
    "decoder": "modelzoo.decoder:DecoderLM",
}


def build(model_cfg, decode: bool = False):
  name = model_cfg.name
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    from configs.base import ConfigError
    raise ConfigError(f"model.name={name!r} is not a known model {sorted(REGISTRY)}{hint}")
  mod, cls = REGISTRY[name].split(":")
  return getattr(importlib.import_module(mod), cls)(model_cfg, decode=decode)
