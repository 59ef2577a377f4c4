"""Sharding as data: logical axis names -> mesh axes. The only file that knows the mesh layout.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters and optimizer state
sharded), `tensor` (Megatron-style: heads and MLP hidden units split).
"""
from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
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
_RULE = dict(RULES)


def make_mesh(sizes: dict[str, int], devices=None) -> jax.sharding.Mesh:
  """The data x fsdp x tensor mesh over `devices` (default: all; e.g. a topology's for --aot).

  jax.make_mesh orders the devices by the hardware: on TPU along the physical torus (the last
  axis, tensor, gets the closest neighbours), on GPU by global id; on CPU it is the plain reshape
  of the device list. Axis types are Auto: the layers' logical constraints place activations.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = tuple(sizes[a] for a in MESH_AXES)
  if math.prod(shape) != len(devices):      # jax.make_mesh would quietly drop extra devices
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                     f"got {len(devices)}")
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                       devices=devices)


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh):
  """Mesh + rules context under which layers' logical constraints take effect (trace inside it)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    yield


def constrain(x, names: tuple):
  """Logical sharding constraint on an activation; a no-op outside `activate`."""
  return nn.with_logical_constraint(x, names)


def shardings(abstract_boxed_tree, mesh):
  """NamedShardings for a tree whose leaves may be nn.LogicallyPartitioned (unboxed structure).

  A dimension its mesh axes do not divide keeps only the axes that do (see _fit), e.g. 2 KV heads
  on mesh.tensor=4 are replicated: MQA/GQA with more tensor shards than KV heads.
  """
  specs = nn.get_partition_spec(abstract_boxed_tree)
  named = nn.logical_to_mesh_sharding(specs, mesh, RULES)
  sizes = dict(mesh.shape)

  def fit(s, x):
    entries = tuple(s.spec) + (None,) * (len(x.shape) - len(s.spec))
    spec = [_fit(_as_tuple(e), [d], sizes) or None for e, d in zip(entries, x.shape)]
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
  return jax.tree.map(fit, named, nn.unbox(abstract_boxed_tree))


def param(init, names: tuple):
  """An initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, names)


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Global input batches [B, ...]: rows split like the "batch" activations."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(_RULE["batch"]))


# ------------------------------------------------------------------------------------------------
# Kernels on a mesh. A Pallas (Mosaic / Triton) or FFI kernel is a custom call the SPMD partitioner
# cannot split: Mosaic refuses, Triton and FFI calls get replicated on the global arrays. So every
# kernel call runs inside jax.shard_map, each device on its own shard, with specs from RULES.

def _free_axes(mesh) -> dict[str, int]:
  """Mesh axes not already manual (e.g. inside an enclosing shard_map): the ones left to split."""
  return {a: n for a, n in mesh.shape.items() if a not in mesh.manual_axes}


def _as_tuple(axes) -> tuple:
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


def _fit(axes, dim_sizes, sizes: dict[str, int]) -> tuple[str, ...]:
  """Of `axes`, in order, those in `sizes` whose running product divides every size in dim_sizes:
  an undivisible dimension is replicated over the axes left out (e.g. model.init's batch of 1)."""
  kept, prod = [], 1
  for a in axes:
    if a in sizes and all(d % (prod * sizes[a]) == 0 for d in dim_sizes):
      kept.append(a)
      prod *= sizes[a]
  return tuple(kept)


def _resolve(name, dim_sizes, free) -> tuple[str, ...]:
  """The mesh axes a logical name splits over in one kernel call (all its dimensions alike)."""
  return _fit(_as_tuple(_RULE[name]), dim_sizes, free)


def _is_array(x) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic))


def shards(name: str, size: int) -> int:
  """How many pieces a kernel dimension of this logical name and size is split into (1 off-mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  free = _free_axes(mesh)
  return math.prod(free[a] for a in _resolve(name, [size], free))


def repeat_groups(x, axis: int, n_heads: int, name: str = "act_heads"):
  """Repeats the groups on `axis` (GQA's KV heads, Mamba-2's B/C groups; head h uses group
  h // (n_heads // groups)) until the pieces `name` splits n_heads into also split the groups:
  contiguous head shards then keep each group with its heads. Identity off-mesh or when the
  mesh already divides the groups; otherwise a device holds no more than the replicated groups
  would take, and autodiff sums the copies' gradients."""
  G, n = x.shape[axis], shards(name, n_heads)
  r = math.lcm(G, n) // G
  return x if r == 1 else jnp.repeat(x, r, axis=axis)


def shard_map_kernel(fn, in_names, out_names):
  """`fn(*args)` run per shard inside jax.shard_map over the active mesh (sharding.activate).

  in_names: per positional argument, a tuple of logical names (RULES keys, or None for a
  dimension kept whole), one per dimension; arguments that are None or Python numbers are passed
  through unchanged (their entry is ignored). out_names: the same for fn's output, a tuple of
  names for one array or a tuple of such tuples for a tuple of arrays. Every logical name splits
  all dimensions carrying it the same way (see _resolve), so fn sees consistent shards: e.g.
  batch over data x fsdp, heads over tensor, time whole. Off-mesh, on a one-device mesh, or with
  every axis already manual, fn is called directly.

  check_vma=False: the kernels' custom_vjp rules and pallas_call do not track varying axes.
  Gradients stay exact: shard_map's transpose sums the cotangent of an input that is replicated
  over an axis (a scalar, Mamba's B/C over tensor) across that axis.
  """
  single = all(n is None or isinstance(n, str) for n in out_names)

  def call(*args):
    mesh = jax.sharding.get_abstract_mesh()
    free = {} if mesh.empty else _free_axes(mesh)
    if math.prod(free.values()) == 1:
      return fn(*args)
    idx = [i for i, a in enumerate(args) if _is_array(a)]
    dims = {}
    for i in idx:
      names, shape = in_names[i], np.shape(args[i])
      if len(names) != len(shape):
        raise ValueError(f"shard_map_kernel: argument {i} has shape {shape} but logical names "
                         f"{names}")
      for n, d in zip(names, shape):
        if n is not None:
          dims.setdefault(n, []).append(d)
    axes = {n: _resolve(n, ds, free) for n, ds in dims.items()}
    for n in jax.tree.leaves(out_names):
      if n not in axes:    # its split would be unknown: the inputs fix every name's shards
        raise ValueError(f"shard_map_kernel: output name {n!r} names no input dimension")

    def spec(names):
      return jax.sharding.PartitionSpec(*(axes[n] or None if n is not None else None
                                          for n in names))

    def local(*xs):
      full = list(args)
      for i, x in zip(idx, xs):
        full[i] = x
      return fn(*full)

    out_specs = spec(out_names) if single else tuple(spec(n) for n in out_names)
    return jax.shard_map(local, in_specs=tuple(spec(in_names[i]) for i in idx),
                         out_specs=out_specs, axis_names=set(free),
                         check_vma=False)(*(args[i] for i in idx))

  return call
