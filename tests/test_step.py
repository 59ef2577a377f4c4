"""train_step details: gradient accumulation is exact, bf16 compute and bf16 matmuls track fp32,
the decay mask."""
import jax
import numpy as np

import modelzoo
from configs import base
from layers import sharding
from training import distributed
from training import step as step_lib

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.d_ff=64", "model.max_len=32",
        "data.seq_len=32", "train.batch_size=32", "train.warmup_steps=1", "mesh.data=8"]


def run(overrides, steps=2, n_devices=None, full=False):
  """(metrics per step, final params; with full=True the whole final train state)."""
  cfg = base.load("configs/quickstart.py", TINY + overrides)
  devices = jax.devices()[:n_devices]
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, len(devices)), devices)
  model, (tx, schedule) = modelzoo.build(cfg.model), step_lib.make_optimizer(cfg.train)
  make, rng, _, state_sh = step_lib.init_state(model, tx, cfg, mesh)
  b_sh = sharding.batch_sharding(mesh)
  with sharding.activate(mesh):
    step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg),
                   in_shardings=(state_sh, b_sh), out_shardings=(state_sh, None))
  rng_np, state, out = np.random.default_rng(0), make(rng), []
  for _ in range(steps):
    B = cfg.train.batch_size
    x = rng_np.integers(0, 256, (B, 33)).astype(np.int32)
    w = (rng_np.random((B, 32)) > 0.2).astype(np.float32)   # uneven token weights across micro-batches
    batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "weights": w,
             "segment_ids": np.ones((B, 32), np.int32),
             "positions": np.broadcast_to(np.arange(32, dtype=np.int32), (B, 32))}
    state, m = step(state, distributed.to_global(batch, b_sh))
    out.append(jax.device_get(m))
  return out, jax.device_get(state if full else state.params)


def test_grad_accumulation_equals_one_big_batch_and_bf16_tracks_fp32():
  m1, p1 = run([])
  m4, p4 = run(["train.grad_accum=4"])   # 4 micro-batches of 8, one row per device each
  np.testing.assert_allclose([m["loss"] for m in m4], [m["loss"] for m in m1], atol=1e-5)
  np.testing.assert_allclose([m["grad_norm"] for m in m4], [m["grad_norm"] for m in m1], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p4, p1)
  mb, pb = run(["model.dtype=bfloat16"])
  np.testing.assert_allclose([m["loss"] for m in mb], [m["loss"] for m in m1], rtol=2e-2)
  assert jax.tree.leaves(pb)[0].dtype == np.float32    # params stay fp32 (param_dtype)
  mm, pm = run(["model.matmul_dtype=bfloat16"])        # bf16 matmul operands, fp32 activations
  np.testing.assert_allclose([m["loss"] for m in mm], [m["loss"] for m in m1], rtol=1e-2)
  assert not np.allclose(jax.tree.leaves(pm)[0], jax.tree.leaves(p1)[0], rtol=0, atol=1e-7)
  # One device compiles other dots than 8: a bf16 dot XLA:CPU leaves to Eigen fails at run time.
  m_one, _ = run(["model.matmul_dtype=bfloat16", "mesh.data=1"], n_devices=1)
  np.testing.assert_allclose([m["loss"] for m in m_one], [m["loss"] for m in mm], rtol=1e-3)
  mz, _ = run(["train.z_loss=1.0"], steps=1)
  assert mz[0]["grad_norm"] != m1[0]["grad_norm"] and mz[0]["loss"] == m1[0]["loss"]


def test_weight_decay_mask_covers_matmuls_and_embeddings_only():
  params = {"embed": {"embedding": 0}, "layers": {"mlp": {"wi": {"kernel": 0, "bias": 0}},
                                                  "norm1": {"scale": 0}}}
  mask = step_lib.decay_mask(params)
  assert mask == {"embed": {"embedding": True}, "layers": {"mlp": {"wi": {"kernel": True, "bias": False}},
                                                            "norm1": {"scale": False}}}


def test_schedule_warms_up_then_decays_to_min_lr():
  t = base.TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
  s = step_lib.make_schedule(t)
  assert float(s(0)) == 0.0 and abs(float(s(10)) - 1.0) < 1e-6
  assert abs(float(s(100)) - 0.1) < 1e-6 and float(s(55)) < 1.0
