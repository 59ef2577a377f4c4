"""Evaluation: validation loss, perplexity and bits per byte (train.py's eval rows, eval.py), and
eval.py's report of a finished run (restored onto its own mesh; samples).

    val = val_batches(cfg, tok, n)                       # this process's share of n val batches
    row = evaluate(eval_fn, params, val, bytes_per_token, b_sh, mesh)
    out = report(workdir, logit_scales=(1.0,), sample="def ")        # what eval.py prints

The loss is training/step.py's `loss_sums` (make_eval_step), the same function the train step
minimises; eval.py's --logit-scale passes its attention-logit multiplier through it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import modelzoo
from configs import base
from configs.base import ConfigError
from data import pipeline, sources, tokenize
from interop import params_io
from interop.generate import generate
from layers import sharding
from training import step as step_lib
from training import workdir as workdir_lib
from training.distributed import to_global


def val_batches(cfg: base.Config, tok, n: int) -> list[dict]:
  """The first n batches of the (fixed-order) validation split, this process's share."""
  it = pipeline.build_dataset(cfg.data, tok, "val",
                              batch_size=cfg.train.batch_size // jax.process_count(), seed=0,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  return [b for _, b in zip(range(n), it)]


def evaluate(eval_fn, params, batches, bytes_per_token, b_sh, mesh) -> dict:
  """Validation loss (nats/token), perplexity and bits per byte."""
  ce = w = 0.0
  with sharding.activate(mesh):
    for batch in batches:
      c, n = eval_fn(params, to_global(batch, b_sh))
      ce, w = ce + float(c), w + float(n)
  loss = ce / max(w, 1.0)
  return {"eval_loss": loss, "eval_ppl": float(np.exp(min(loss, 50.0))),
          "eval_bpb": loss / np.log(2) / bytes_per_token}


def load_run(workdir: Path, step=None, devices=None, allow_unverified: bool = False):
  """(cfg, tokenizer, step, params, mesh) of a run directory, params restored onto the run's own
  mesh over `devices` (default: all), or the nearest they can hold (workdir.restore_mesh), by
  params_io.restore_params (checksums verified, the workdir left as it is). cfg carries that mesh
  and an eval batch divisible by its data-parallel size (workdir.on_mesh)."""
  cfg = workdir_lib.read_config(workdir)
  tok = tokenize.build_tokenizer(cfg.data, workdir)
  mesh = workdir_lib.restore_mesh(cfg, devices)
  _, s, params = params_io.restore_params(workdir, step, mesh=mesh,
                                          allow_unverified=allow_unverified)
  return workdir_lib.on_mesh(cfg, mesh), tok, s, params, mesh


def lower_eval(cfg: base.Config, devices, logit_scale: float = 1.0):
  """The eval step lowered for `devices` (a topology's), on the mesh a restore there would use:
  (lowered, abstract (params, batch), mesh sizes), as aot.memory_report takes it."""
  mesh = workdir_lib.restore_mesh(cfg, devices)
  cfg = workdir_lib.on_mesh(cfg, mesh)
  base.validate(cfg, mesh.size)
  modelzoo.check(cfg.model)
  args = (workdir_lib.param_target(cfg.model, cfg.data.seq_len, mesh),
          step_lib.batch_spec(cfg, sharding.batch_sharding(mesh)))
  eval_step = step_lib.make_eval_step(modelzoo.build(cfg.model), cfg, logit_scale)
  with sharding.activate(mesh):
    lowered = jax.jit(eval_step).lower(*args)
  return lowered, args, dict(mesh.shape)


def sample_key(seed: int, workdir: Path, step: int) -> jax.Array:
  """--sample's key: --seed folded with the run (a hash of its config.json) and the checkpoint
  step, so different runs, or two checkpoints of one, do not share their draws at one seed."""
  digest = hashlib.sha256((Path(workdir) / "config.json").read_bytes()).digest()
  run = np.uint32(int.from_bytes(digest[:4], "little"))
  key = jax.random.fold_in(jax.random.PRNGKey(seed), run)
  return jax.random.fold_in(key, np.uint32(step))


def report(workdir: Path, *, step: int | None = None, batches: int | None = None,
           logit_scales=(1.0,), sample: str | None = None, max_new_tokens: int = 100,
           temperature: float = 0.8, top_k: int = 0, seed: int = 0, use_cache: bool = True,
           devices=None, allow_unverified: bool = False) -> dict:
  """eval.py's output: step, batches, mesh, the eval row (one row per logit scale, with the
  relative loss change, when several are given) and, given a prompt, the sampled text."""
  workdir = Path(workdir)
  cfg, tok, step, params, mesh = load_run(workdir, step, devices, allow_unverified)
  model = modelzoo.build(cfg.model)
  b_sh = sharding.batch_sharding(mesh)
  val = val_batches(cfg, tok, batches or cfg.train.eval_steps)
  bpt = sources.bytes_per_token(cfg.data, tok, "val")
  out = {"step": step, "batches": len(val), "mesh": dict(mesh.shape)}
  for alpha in logit_scales:
    eval_fn = jax.jit(step_lib.make_eval_step(model, cfg, alpha))
    res = evaluate(eval_fn, params, val, bpt, b_sh, mesh)     # traced on the mesh
    if len(logit_scales) == 1:
      out.update(res)
    else:
      out.setdefault("logit_scale", {})[str(alpha)] = res
  if len(logit_scales) > 1:
    ref = out["logit_scale"][str(logit_scales[0])]["eval_loss"]
    for r in out["logit_scale"].values():
      r["rel_loss_increase"] = r["eval_loss"] / ref - 1.0
  if sample is not None:
    prompt = tok.encode(sample)
    if len(prompt) == 0:
      raise ConfigError("--sample: the prompt encodes to no tokens")
    if cfg.model.pos == "learned" and len(prompt) + max_new_tokens > cfg.model.max_len:
      raise ConfigError(f"prompt ({len(prompt)} tokens) + --max-new-tokens {max_new_tokens} "
                        f"exceeds model.max_len={cfg.model.max_len}")
    with sharding.activate(mesh):     # one row: the kernels replicate it over data x fsdp
      ids = generate(params, jnp.asarray(prompt, jnp.int32)[None], sample_key(seed, workdir, step),
                     model_cfg=cfg.model, max_new=max_new_tokens, temperature=temperature,
                     top_k=top_k, use_cache=use_cache, logit_scale=logit_scales[0])
    out["sample"] = tok.decode(np.asarray(ids[0]))
  return out
