"""The model zoo: models built by name from `config.model.name`.

    model = modelzoo.build(cfg.model)            # a flax.linen Module
    logits_BTV = model.apply({"params": p}, tokens_BT, positions_BT, segment_ids_BT)
"""
from __future__ import annotations

import difflib
import importlib

# name -> "module:Class": one folder per family (model.py; see modelzoo/common.py for the config ->
# layers translations families share), imported lazily so one model's dependencies never break
# another. The model module defines
#   check_config(model_cfg)                      raise ConfigError for impossible settings (pre-compile)
#   flops_per_token(model_cfg, n_params, seq_len) model FLOPs of one training token
#   kernel_flops_per_token(model_cfg, seq_len)   the part of those inside the kernels (attention,
#                                                scans): invisible to XLA in a Pallas custom call
# and may define
#   layer_unit(model_cfg)                        layers in the unit the stack repeats (default 1)
REGISTRY = {
    "decoder": "modelzoo.decoder.model:DecoderLM",    # GPT-2 / Llama style; sigmoid attention
    "dual_stream": "modelzoo.dual_stream.model:DualStreamLM",
    "deltanet": "modelzoo.deltanet.model:DeltaNetLM",
    "mamba": "modelzoo.mamba.model:MambaLM",
    "mamba2": "modelzoo.mamba2.model:Mamba2LM",      # Mamba-2 and layer-pattern hybrids
}


def _module(model_cfg):
  name = model_cfg.name
  if name not in REGISTRY:
    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    from configs.base import ConfigError
    raise ConfigError(f"model.name={name!r} is not a known model {sorted(REGISTRY)}{hint}")
  mod, cls = REGISTRY[name].split(":")
  return importlib.import_module(mod), cls


def check(model_cfg) -> None:
  """Model-specific validation; raises ConfigError naming the offending key."""
  _module(model_cfg)[0].check_config(model_cfg)


def build(model_cfg, decode: bool = False):
  mod, cls = _module(model_cfg)
  return getattr(mod, cls)(model_cfg, decode=decode)


def flops_per_token(model_cfg, n_params: int, seq_len: int) -> float:
  return _module(model_cfg)[0].flops_per_token(model_cfg, n_params, seq_len)


def kernel_flops_per_token(model_cfg, seq_len: int) -> float:
  return _module(model_cfg)[0].kernel_flops_per_token(model_cfg, seq_len)


def layer_unit(model_cfg) -> int:
  mod, _ = _module(model_cfg)
  return mod.layer_unit(model_cfg) if hasattr(mod, "layer_unit") else 1
