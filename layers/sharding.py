"""Sharding as data: logical axis names -> mesh axes. The only file that knows the mesh layout.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters and optimizer state
sharded), `tensor` (Megatron-style: heads and MLP hidden units split).
"""
from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axis or axes). Parameters use the first block, activations the second.
RULES = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("kv", None),          # per-head feature dim
    ("mlp", "tensor"),
    ("layers", None),      # the nn.scan stacking axis
    ("norm", None),
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


def make_mesh(sizes: dict[str, int], devices=None) -> jax.sharding.Mesh:
  devices = np.asarray(jax.devices() if devices is None else devices)
  shape = tuple(sizes[a] for a in MESH_AXES)
  return jax.sharding.Mesh(devices.reshape(shape), MESH_AXES)


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh):
  """Mesh + rules context under which layers' logical constraints take effect (trace inside it)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    yield


def constrain(x, names: tuple):
  """Logical sharding constraint on an activation; a no-op outside `activate`."""
  return nn.with_logical_constraint(x, names)


def shardings(abstract_boxed_tree, mesh):
  """NamedShardings for a tree whose leaves may be nn.LogicallyPartitioned (unboxed structure)."""
  specs = nn.get_partition_spec(abstract_boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, RULES)


def param(init, names: tuple):
  """An initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, names)
