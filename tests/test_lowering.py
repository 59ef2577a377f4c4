"""A whole train step of a small model using each kernel lowers for TPU and for GPU on this CPU machine,
with the Pallas kernel's custom call in the module (model.attn_impl=pallas selects the kernels)."""
import importlib

import jax
import pytest

import modelzoo
from configs import base
from layers import sharding
from training import step as step_lib

TARGET = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}
TINY = ["model.d_model=64", "model.n_layers=2", "model.max_len=128", "data.seq_len=128",
        "train.batch_size=2", "train.warmup_steps=1", "mesh.data=1", "model.attn_impl=pallas"]
HEADS = ["model.n_heads=2", "model.d_ff=128"]     # in the families that have these fields
# (model, kernel it exercises, extra overrides)
CASES = [
    ("decoder", "attention", []),
    ("decoder", "sigmoid_attention", ["model.attention=sigmoid"]),
    ("deltanet", "delta_rule", ["model.pos=none"]),
    ("mamba", "selective_scan", ["model.pos=none"]),
    ("mamba2", "ssd", ["model.pos=none"]),
]


def lower_train_step(name, overrides, platform):
  """quickstart's config as model.name=name (the fields both families have kept)."""
  heads = HEADS if "n_heads" in modelzoo.config_fields()[name] else []
  cfg = base.load("configs/quickstart.py", [f"model.name={name}", *TINY, *heads, *overrides])
  modelzoo.check(cfg.model)
  model, (tx, schedule) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)

  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, 1), jax.devices()[:1])
  _, _, abstract, _ = step_lib.init_state(model, tx, cfg, mesh)
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)  # no CPU placement
  batch = {k: jax.ShapeDtypeStruct((2, cfg.data.seq_len), d)
           for k, d in step_lib.BATCH_DTYPES.items()}
  step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg))
  return step.trace(state, batch).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("name, kernel, extra", CASES, ids=[c[1] for c in CASES])
def test_train_step_lowers_with_the_pallas_kernel(name, kernel, extra, platform):
  module = modelzoo.REGISTRY[name][1].split(":")[0]
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:
    pytest.fail(f"{module} is registered but missing: {e}")
  text = lower_train_step(name, extra, platform)
  assert TARGET[platform] in text, f"no {TARGET[platform]} in the {platform} train step"
