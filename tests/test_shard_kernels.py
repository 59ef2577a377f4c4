"""Kernels on a mesh: every kernel call of the models runs inside jax.shard_map with specs from
layers/sharding.py. Loss and gradients of tiny models on 8-device meshes equal one device's, with
the Pallas kernels run by the interpreter (impl=interpret) and with the jnp paths (impl=xla); the
kernels really sit inside the manual (shard_map) region; the CPU C++ attention kernel now runs per
shard; undivisible dimensions (init's batch of 1, 2 KV heads on tensor=4) are replicated."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modelzoo
from configs import base
from kernels.attention import cpu
from layers import sharding

TINY = ["model.d_model=32", "model.n_layers=1", "model.max_len=32", "data.seq_len=32"]
HEADS = ["model.n_heads=4", "model.d_ff=64"]     # in the families that have these fields
B, T = 8, 32
# kernel family -> (config, overrides, packed with segment ids)
FAMILIES = {
    "attention_gqa": ("configs/quickstart.py", ["model.n_kv_heads=2", "model.pos=rope"], True),
    "sigmoid_attention": ("configs/sigmoid_tiny.py", [], True),
    "delta_rule": ("configs/deltanet_tiny.py", ["model.dn_chunk=16"], True),
    "gated_delta_rule": ("configs/deltanet_tiny.py", ["model.dn_chunk=16", "model.dn_decay=true",
                                                      "model.dn_gate=true"], False),
    "selective_scan": ("configs/mamba_tiny.py", ["model.ssm_chunk=16"], False),
    "ssd_groups": ("configs/mamba2_tiny.py", ["model.ssm_chunk=16", "model.ssm_head_dim=16",
                                              "model.ssm_groups=2"], False),
    "dual_stream": ("configs/dual_stream_tiny_dense.py", [], True),
    # slow matrix only
    "attention_mqa": ("configs/quickstart.py", ["model.n_kv_heads=1", "model.pos=rope"], True),
    "mamba2_hybrid": ("configs/mamba2_hybrid_tiny.py", ["model.ssm_chunk=16",
                                                        "model.ssm_head_dim=16", "model.n_layers=2",
                                                        "model.layer_pattern=M*"], False),
}
MESHES = [dict(data=8, fsdp=1, tensor=1), dict(data=1, fsdp=4, tensor=2),
          dict(data=2, fsdp=1, tensor=4)]


def load(family, impl):
  path, extra, _ = FAMILIES[family]
  heads = HEADS if "n_heads" in modelzoo.config_fields()[base.load(path).model.name] else []
  return base.load(path, TINY + heads + extra + [f"model.attn_impl={impl}"])


def setup(family, impl):
  cfg, packed = load(family, impl), FAMILIES[family][2]
  modelzoo.check(cfg.model)
  model = modelzoo.build(cfg.model)
  rng = np.random.default_rng(0)
  x = rng.integers(0, cfg.model.vocab_size, (B, T + 1)).astype(np.int32)
  batch = {"inputs": x[:, :-1], "targets": x[:, 1:],
           "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T))}
  if packed:   # 1-3 documents per row
    batch["segment_ids"] = np.sort(rng.integers(0, 3, (B, T)), axis=1).astype(np.int32)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch["inputs"][:1]))["params"]
  return model, params, batch


def loss_fn(model):
  def loss(params, batch):
    logits = model.apply({"params": params}, batch["inputs"], batch["positions"],
                         batch.get("segment_ids")).astype(jnp.float32)
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
        logits, batch["targets"][..., None], -1)[..., 0]
    return nll.mean()
  return loss


def param_shardings(model, mesh):
  with sharding.activate(mesh):
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
  return sharding.shardings(boxed, mesh)["params"]


def on_mesh(model, params, batch, sizes):
  """(loss, grads) with params sharded as training shards them and the batch over data x fsdp."""
  mesh = sharding.make_mesh(sizes)
  params = jax.device_put(params, param_shardings(model, mesh))
  with sharding.activate(mesh):
    batch = jax.device_put(batch, sharding.batch_sharding(mesh))
    return jax.jit(jax.value_and_grad(loss_fn(model)))(params, batch)


def assert_same(got, want, what):
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, err_msg=what)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=what),
               got[1], want[1])


def kernel_specs(model, params, batch, sizes):
  """in_specs of the kernels' shard_maps in the forward pass (top level or in the layer scan).
  Those taking no activations are skipped: flax's scan hoists the kernels' loop-invariant work
  (masks from segment ids, zero initial states) out of the layer loop, in a shard_map of its own."""
  with sharding.activate(sharding.make_mesh(sizes)):
    jaxpr = jax.make_jaxpr(loss_fn(model))(params, batch).jaxpr
  subs = [jaxpr] + [s.jaxpr for e in jaxpr.eqns for s in e.params.values() if hasattr(s, "jaxpr")]
  return [e.params["in_specs"] for j in subs for e in j.eqns
          if e.primitive.name == "shard_map" and len((e.params["in_specs"] or [()])[0]) > 2]


def check_family(family, impl, meshes):
  model, params, batch = setup(family, impl)
  want = jax.jit(jax.value_and_grad(loss_fn(model)))(params, batch)   # no mesh: one device
  for sizes in meshes:
    assert_same(on_mesh(model, params, batch, sizes), want, f"{family} {impl} {sizes}")
    # Nothing fell back to replication: the kernels' first input (q, x, u) uses every axis.
    used = [{a for e in spec[0] if e for a in ((e,) if isinstance(e, str) else e)
             if sizes[a] > 1} for spec in kernel_specs(model, params, batch, sizes)]
    assert used and all(u == {a for a, n in sizes.items() if n > 1} for u in used), used


# Default suite: each family once with the Pallas interpreter; tensor=4 where groups are repeated
# (2 KV heads, 2 B/C groups).
DEFAULT = [("attention_gqa", 2), ("sigmoid_attention", 1), ("delta_rule", 0),
           ("gated_delta_rule", 2), ("selective_scan", 1), ("ssd_groups", 2), ("dual_stream", 1)]


@pytest.mark.parametrize("family, mesh", DEFAULT, ids=[f for f, _ in DEFAULT])
def test_model_on_mesh_equals_one_device_interpret(family, mesh):
  check_family(family, "interpret", [MESHES[mesh]])


def test_gqa_with_more_tensor_shards_than_kv_heads_xla():
  """2 KV heads on tensor=4: their projections are replicated, the heads repeated per shard."""
  check_family("attention_gqa", "xla", [MESHES[2]])


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["interpret", "xla"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_on_every_mesh_equals_one_device(family, impl):
  check_family(family, impl, MESHES)


# ---------------------------------------------------------------------------------------------
# The wrapper is used.

def find_eqns(jaxpr, name, inside=False, found=None):
  """(inside a shard_map?) for every equation of primitive `name`, nested jaxprs included."""
  found = [] if found is None else found
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == name:
      found.append(inside)
    for v in eqn.params.values():
      for sub in v if isinstance(v, (tuple, list)) else (v,):
        sub = getattr(sub, "jaxpr", sub)   # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          find_eqns(sub, name, inside or eqn.primitive.name == "shard_map", found)
  return found


@pytest.mark.parametrize("family", ["attention_gqa", "delta_rule", "ssd_groups"])
def test_every_kernel_call_is_inside_shard_map(family):
  """Every pallas_call (forward and backward; TPU and GPU branches of impl=pallas, the interpreted
  kernel of impl=interpret) of a sharded grad step sits in a shard_map, and the step lowers for
  TPU with the Mosaic calls and a manual computation region (sdy.manual_computation)."""
  mesh = sharding.make_mesh(MESHES[1])
  b_sh = sharding.batch_sharding(mesh)
  tok = jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=b_sh)
  for impl in ("interpret", "pallas"):
    model = modelzoo.build(load(family, impl).model)
    with sharding.activate(mesh):
      boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(boxed)["params"], sharding.shardings(boxed, mesh)["params"])
    loss = lambda p, x, t: model.apply({"params": p}, x, t).mean()
    with sharding.activate(mesh):
      traced = jax.jit(jax.grad(loss)).trace(params, tok, tok)
      inside = find_eqns(traced.jaxpr.jaxpr, "pallas_call")
      assert len(inside) >= 2 and all(inside), (impl, inside)
      if impl == "pallas":
        text = traced.lower(lowering_platforms=("tpu",)).as_text()
        assert "sdy.manual_computation" in text and "tpu_custom_call" in text


def test_cpu_attention_kernel_runs_per_shard():
  """impl=auto on CPU: the C++ kernel, formerly one-device only, now serves each shard."""
  if not cpu.load():                            # the CPU platform's start-up does this
    pytest.skip("no C++ compiler: the CPU kernel is not built")
  model, params, batch = setup("attention_gqa", "auto")
  del batch["segment_ids"]                      # the C++ kernel takes no segment ids
  want = jax.jit(jax.value_and_grad(loss_fn(model)))(params, batch)
  mesh = sharding.make_mesh(MESHES[1])
  with sharding.activate(mesh):
    text = jax.jit(jax.grad(loss_fn(model))).lower(params, batch).as_text()
  assert cpu.FWD in text and cpu.BWD in text
  assert_same(on_mesh(model, params, batch, MESHES[1]), want, "cpu kernel")


# ---------------------------------------------------------------------------------------------
# The helper itself.

def test_shard_map_kernel_specs_undivisible_dims_and_replicated_inputs():
  def fn(x_BTE, a_E, b_BTN, s, off):   # s is traced and replicated, off a static Python number
    return (x_BTE * a_E)[..., None] * b_BTN[:, :, None, :] * s + off, x_BTE.sum(1)
  names = (("batch", "length", "act_mlp"), ("act_mlp",), ("batch", "length", None), (), None)
  outs = (("batch", "length", "act_mlp", None), ("batch", "act_mlp"))
  kernel = sharding.shard_map_kernel(fn, names, outs)

  def loss(x, a, b, s):
    y, z = kernel(x, a, b, s, 0.5)
    return jnp.sin(y).sum() + (z ** 2).sum()
  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  for Bsz, E in [(4, 6), (1, 6), (2, 3)]:   # divisible; batch of 1; batch 2 (data only), odd E
    ks = jax.random.split(jax.random.PRNGKey(Bsz), 3)
    args = (jax.random.normal(ks[0], (Bsz, 5, E)), jax.random.normal(ks[1], (E,)),
            jax.random.normal(ks[2], (Bsz, 5, 3)), jnp.float32(1.5))
    want = grad(*args)
    with sharding.activate(mesh):
      jaxpr = jax.make_jaxpr(loss)(*args).jaxpr
      got = grad(*args)
    spec = [e for e in jaxpr.eqns if e.primitive.name == "shard_map"][0].params["in_specs"]
    batch_axes = {4: ("data", "fsdp"), 1: None, 2: "data"}[Bsz]
    assert spec[0] == jax.P(batch_axes, None, "tensor" if E % 2 == 0 else None), spec
    assert spec[3] == jax.P()
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, w in zip(got[1], want[1]):   # cotangents of replicated inputs are summed over shards
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  # Off-mesh and on a one-device mesh: fn itself, no shard_map.
  with sharding.activate(sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])):
    assert "shard_map" not in str(jax.make_jaxpr(loss)(*args))
  assert "shard_map" not in str(jax.make_jaxpr(loss)(*args))


def test_repeat_groups_and_param_fallback():
  x = jnp.arange(2 * 3).reshape(1, 2, 3)       # 2 groups on axis 1
  assert sharding.repeat_groups(x, 1, 8) is x  # off-mesh: identity
  mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
  with sharding.activate(mesh):
    y = sharding.repeat_groups(x, 1, 8)        # 8 heads over 4 shards: groups 0,0,1,1
    np.testing.assert_array_equal(y[0, :, 0], [0, 0, 3, 3])
    assert sharding.repeat_groups(x, 1, 6) is x  # tensor=4 does not divide 6 heads: replicated
  abstract = {"k": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((32, 2, 8), jnp.float32),
                                           ("embed", "kv_heads", "kv")),
              "q": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((32, 8, 8), jnp.float32),
                                           ("embed", "heads", "kv"))}
  sh = sharding.shardings(abstract, sharding.make_mesh(dict(data=1, fsdp=2, tensor=4)))
  assert sh["k"].spec == jax.P("fsdp", None, None) and sh["q"].spec == jax.P("fsdp", "tensor", None)
