"""A serving artifact: the forward pass and a KV-cache decode step as serialized `jax.export` modules.

Written to the output folder:
  forward.jax_export      (params, tokens_BT int32[b, T]) -> logits_BTV float32; b is symbolic
  decode_step.jax_export  (params, cache, tokens_B1 int32[B, 1], positions_B1 int32[B, 1])
                          -> (logits_BV float32, cache); B and the cache length S are fixed
  params.safetensors      the parameters as a flat {name: array} dict: exactly the `params` argument
  cache.json              the decode cache's flat names, shapes and dtypes (start from zeros)
  manifest.json           shapes, platforms, the seqzoo config, how to call
Running it needs jax and safetensors only (no seqzoo code):

  exp = jax.export.deserialize(open("forward.jax_export", "rb").read())
  logits = exp.call(safetensors.numpy.load_file("params.safetensors"), tokens_BT)

The parameters stay outside the modules (arguments, not constants): the modules stay small, the
weights can be swapped (a fine-tuned checkpoint of the same shapes) without re-exporting.
"""
from __future__ import annotations

import json
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np

import modelzoo
from configs import base
from layers import sharding
from interop.params_io import flatten, save_file, unflatten
from training import workdir as workdir_lib


def forward_fn(model_cfg):
  """The exported forward: (flat params, tokens_BT int32) -> logits_BTV float32."""
  model = modelzoo.build(model_cfg)

  def forward(flat_params, tokens_BT):
    logits_BTV = model.apply({"params": unflatten(flat_params)}, tokens_BT)
    return logits_BTV.astype(jnp.float32)
  return forward


def export_forward(model_cfg, params, seq_len: int, platforms=None) -> jax.export.Exported:
  # A symbolic batch size; the length stays concrete (the chunked kernels pad T to their block
  # sizes, which symbolic shape arithmetic cannot prove divisible). Traced off any mesh: the
  # artifact is a one-device program, callable wherever jax runs.
  tokens = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {seq_len}"), jnp.int32)
  return jax.export.export(jax.jit(forward_fn(model_cfg)), platforms=platforms)(
      _specs(flatten(params)), tokens)


def lower_forward(cfg: base.Config, devices, seq_len: int, batch: int):
  """The same forward for `batch` rows lowered for `devices` (export.py --aot: a topology's) with
  the parameters sharded on the mesh a restore there would use: (lowered, abstract args, mesh
  sizes), as training/aot.memory_report takes it."""
  mesh = workdir_lib.restore_mesh(cfg, devices)
  params = flatten_abstract(workdir_lib.param_target(cfg.model, seq_len, mesh))
  b_sh = sharding.batch_sharding(mesh)
  if batch % (mesh.shape["data"] * mesh.shape["fsdp"]):    # e.g. one row: every device has it
    b_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=b_sh)
  with sharding.activate(mesh):
    lowered = jax.jit(forward_fn(cfg.model)).lower(params, tokens)
  return lowered, (params, tokens), dict(mesh.shape)


def cache_spec(model_cfg, batch: int, cache_len: int) -> dict:
  """Flat {name: ShapeDtypeStruct} of the decode cache for `batch` sequences of up to cache_len."""
  model = modelzoo.build(model_cfg, decode=True)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((batch, cache_len), jnp.int32)))
  cache = flax.linen.unbox(shapes).get("cache", {})
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flatten_abstract(cache).items()}


def flatten_abstract(tree) -> dict:
  return {".".join(k): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


def export_decode(model_cfg, params, batch: int, cache_len: int, platforms=None):
  """(Exported, cache spec) of one decode step; None if the model keeps no cache."""
  spec = cache_spec(model_cfg, batch, cache_len)
  if not spec:
    return None, spec
  model = modelzoo.build(model_cfg, decode=True)

  def decode_step(flat_params, flat_cache, tokens_B1, positions_B1):
    logits_B1V, upd = model.apply({"params": unflatten(flat_params), "cache": unflatten(flat_cache)},
                                  tokens_B1, positions_B1, mutable=["cache"])
    new_cache = {k: v for k, v in flatten_abstract(upd["cache"]).items()}
    return logits_B1V[:, -1].astype(jnp.float32), new_cache
  tok = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
  exp = jax.export.export(jax.jit(decode_step), platforms=platforms)(
      _specs(flatten(params)), spec, tok, tok)
  return exp, spec


def _specs(flat: dict) -> dict:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}


def write(out: Path, cfg: base.Config, params, seq_len: int, batch: int, cache_len: int,
          platforms=None) -> dict:
  """Writes the artifact folder; returns the manifest."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  params = jax.device_get(params)
  fwd = export_forward(cfg.model, params, seq_len, platforms)
  (out / "forward.jax_export").write_bytes(fwd.serialize())
  dec, spec = export_decode(cfg.model, params, batch, cache_len, platforms)
  if dec is not None:
    (out / "decode_step.jax_export").write_bytes(dec.serialize())
    (out / "cache.json").write_text(json.dumps(
        {k: {"shape": list(v.shape), "dtype": np.dtype(v.dtype).name} for k, v in spec.items()},
        indent=1))
  save_file(flatten(params), out / "params.safetensors", metadata={"format": "seqzoo"})
  manifest = {
      "forward": {"file": "forward.jax_export", "args": ["params", f"tokens int32[b, {seq_len}]"],
                  "returns": f"logits float32[b, {seq_len}, {cfg.model.vocab_size}]"},
      "decode_step": None if dec is None else {
          "file": "decode_step.jax_export", "cache": "cache.json (all zeros to start)",
          "args": ["params", "cache", f"tokens int32[{batch}, 1]", f"positions int32[{batch}, 1]"],
          "returns": [f"logits float32[{batch}, {cfg.model.vocab_size}]", "cache"],
          "cache_len": cache_len},
      "params": "params.safetensors",
      "platforms": list(fwd.platforms),
      "config": base.to_dict(cfg),
  }
  (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
  return manifest
