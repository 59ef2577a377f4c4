"""Pre-LN, Pre-RMSNorm and Pre-CRMSNorm: one trained run's logits three ways, and each one's step time.

    python benchmarks/norm_equivalence.py --workdir runs/quickstart [--batches 4] [--repeats 30]

Converts the run's latest checkpoint LN -> RMSNorm -> CRMSNorm in memory (interop/norm_convert.py,
as `export.py --to-norm` does), compares the logits on its first validation batches with the
Pre-LN model's (max |difference|, and that over max |logit|) and their eval losses, and times one
training step (training/step.py's: forward, backward, clipping, AdamW) of each model on this
machine: the three interleaved, --repeats rounds, the median per model and its ratio to Pre-LN's;
and the same for one norm alone (forward and backward on a batch-sized [B, T, D] input).
Prints one JSON object (the after-run of configs/repro_pre_crmsnorm.py). CPU step times are what
this machine measures; on accelerators the norm's share, and so the saving, differs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import jax                                   # noqa: E402
import jax.numpy as jnp                      # noqa: E402

import modelzoo                              # noqa: E402
from interop import norm_convert             # noqa: E402
from layers import sharding                  # noqa: E402
from layers.norm import Norm                 # noqa: E402
from training import evaluate                # noqa: E402
from training import step as step_lib        # noqa: E402
from training.distributed import to_global   # noqa: E402

FORMS = ("layernorm", "rmsnorm", "crmsnorm")


def forms(m, params) -> dict:
  """Each form's (model config, params): the run's, then converted one step at a time."""
  out = {m.norm: (m, params)}
  for to in FORMS[FORMS.index(m.norm) + 1:]:
    m, params = norm_convert.convert(m, params, to)
    out[to] = (m, params)
  return out


def logits(m, params, batches) -> list[jax.Array]:
  apply = jax.jit(modelzoo.build(m).apply)
  return [apply({"params": params}, b["inputs"], b.get("positions"), b.get("segment_ids"))
          for b in batches]


def step_time(fns: dict, repeats: int) -> dict:
  """Median seconds per call of each fn(), the fns interleaved round by round (the same load)."""
  for f in fns.values():
    jax.block_until_ready(f())             # compile
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f())
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def train_step_fn(cfg, m, params, batch, mesh):
  cfg = dataclasses.replace(cfg, model=m)
  model, (tx, schedule) = modelzoo.build(m), step_lib.make_optimizer(cfg.train)
  zero = jnp.zeros((), jnp.int32)
  state = step_lib.TrainState(step=zero, params=params, buffers={}, opt_state=tx.init(params),
                              rng=jax.random.PRNGKey(0), bad_steps=zero, skipped=zero)
  step = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg))

  def run():
    with sharding.activate(mesh):           # traced (first call) under the mesh's rules
      return step(state, batch)
  return run


def norm_fn(kind: str, B: int, T: int, D: int):
  """Forward and backward of one norm alone on a [B, T, D] input (D - 1 for CRMSNorm)."""
  norm = Norm(kind)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D - (kind == "crmsnorm")))
  variables = norm.init(jax.random.PRNGKey(1), x)
  grad = jax.jit(jax.grad(lambda v, x: jnp.sum(norm.apply(v, x) ** 2), argnums=(0, 1)))
  return lambda: grad(variables, x)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a trained Pre-LN decoder run")
  p.add_argument("--batches", type=int, default=4, help="validation batches for the logits")
  p.add_argument("--repeats", type=int, default=30, help="timed rounds of the three steps")
  args = p.parse_args(argv)
  cfg, tok, step, params, mesh = evaluate.load_run(Path(args.workdir))
  norm_convert.check_convertible(cfg.model, "crmsnorm")
  b_sh = sharding.batch_sharding(mesh)
  batches = [to_global(b, b_sh) for b in evaluate.val_batches(cfg, tok, args.batches)]
  models = forms(cfg.model, jax.device_get(params))
  out = {"step": step, "forms": list(models)}
  with sharding.activate(mesh):
    got = {k: logits(m, p, batches) for k, (m, p) in models.items()}
  ref = got[cfg.model.norm]
  scale = max(float(jnp.abs(r).max()) for r in ref)
  for k, ls in got.items():
    diff = max(float(jnp.abs(a - r).max()) for a, r in zip(ls, ref))
    out[k] = {"max_abs_diff": diff, "rel_diff": diff / scale,
              "eval_loss": eval_loss(cfg, *models[k], batches, mesh),
              "n_params": sum(x.size for x in jax.tree.leaves(models[k][1]))}
  out["max_abs_logit"] = scale
  fns = {k: train_step_fn(cfg, m, p, batches[0], mesh) for k, (m, p) in models.items()}
  t = step_time(fns, args.repeats)
  B, T = batches[0]["inputs"].shape
  t_norm = step_time({k: norm_fn(k, B, T, cfg.model.d_model) for k in models}, 10 * args.repeats)
  for k, s in t.items():
    out[k].update(step_ms=1e3 * s, step_ratio=s / t[cfg.model.norm],
                  norm_us=1e6 * t_norm[k], norm_ratio=t_norm[k] / t_norm[cfg.model.norm])
  print(json.dumps(out, indent=1))
  return 0


def eval_loss(cfg, m, params, batches, mesh) -> float:
  """The eval loss of model `m` on the batches: training/step.py's eval step, as eval.py's."""
  cfg = dataclasses.replace(cfg, model=m)
  step = jax.jit(step_lib.make_eval_step(modelzoo.build(m), cfg))
  ce = w = 0.0
  with sharding.activate(mesh):
    for b in batches:
      c, n, _ = step(params, b)
      ce, w = ce + float(c), w + float(n)
  return ce / max(w, 1.0)


if __name__ == "__main__":
  sys.exit(main())
