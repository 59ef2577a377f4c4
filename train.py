"""Train a seqzoo model: one pure `train_step(state, batch)`, jitted once with explicit shardings.

    python train.py --config configs/quickstart.py [--workdir runs/qs] [key.path=value ...]

Re-running the same command with the same workdir resumes from its latest checkpoint and continues
bitwise identically to an uninterrupted run. SIGTERM (preemption) saves a checkpoint and exits 0.
On several hosts, the same command on each (see training/distributed.py, docs/multihost.md).
`--check` validates config, data, tokenizer, mesh and checkpoints, then exits without compiling.
`--aot TOPOLOGY` (v5e:2x2, v5p:4x4x4, v6e:4x4, v4:2x2x1, h100:1x1x8, a100:1x1x8) compiles this
step for that slice on this host's CPU (libtpu / the CUDA plugin, `pip install -e '.[tpu]'` or
`'.[gpu-aot]'`), prints memory per device against HBM, checked FLOPs, a roofline step time,
tokens/s per chip and an MFU estimate (training/aot.py), writes nothing, and exits 0 if it fits.
Exit codes (training/cli.py): 0 done (or preempted and saved; --aot: fits), 2 a user error, 1 a
checkpoint write/read failure, 3 stopped after too many non-finite updates in a row (the last
good state is saved), 4 --aot: the step does not fit in the topology's HBM.

This file is the command line and the loop; what it runs lives in packages: data/ (tokens ->
batches), modelzoo/ (the model), layers/sharding.py (the mesh), training/ (state, optimizer and
step, checkpoints, metrics, evaluation, multi-process and CPU set-up).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import jax

import modelzoo
from configs import base
from configs.base import ConfigError
from data import pipeline, sources, tokenize
from layers import sharding
from training import aot, cli, distributed, evaluate, platform_cpu
from training import metrics as metrics_lib
from training import step as step_lib
from training.checkpoint import Checkpointer
from training.workdir import prepare_workdir

log = logging.getLogger("seqzoo")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="configs/<name>.py")
  p.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
  p.add_argument("--check", action="store_true",
                 help="validate config, data, tokenizer, mesh and checkpoints; exit before compiling")
  p.add_argument("--aot", metavar="TOPOLOGY", default=None,
                 help="compile the step for a TPU/GPU slice from this host and report memory, "
                      "FLOPs and a roofline (e.g. v5e:2x2, v5p:4x4x4, h100:1x1x8); runs nothing")
  p.add_argument("overrides", nargs="*", help="key.path=value")
  distributed.add_args(p)
  return p.parse_intermixed_args(argv)     # flags may come after key=value overrides


def main(argv=None) -> int:
  cli.setup_logging()
  args = parse_args(argv)
  cfg = base.load(args.config, args.overrides)      # pure Python: before any JAX backend starts
  if args.aot:
    aot.compile_on_this_host()
    return aot.verdict(aot.report(cfg, args.aot), args.config)
  unapplied = platform_cpu.configure(cfg.mesh.cpu_devices)   # before the backend starts
  started = distributed.initialize(args)              # before anything asks JAX for devices
  lead = jax.process_index() == 0
  if not lead:
    log.setLevel(logging.WARNING)                     # one process logs; all report warnings
  base.validate(cfg, jax.device_count())
  modelzoo.check(cfg.model)
  workdir = Path(args.workdir or f"runs/{Path(args.config).stem}")
  prepare_workdir(workdir, cfg, lead)
  log.info("config:\n%s", base.to_json(cfg))
  log.info("%s; %d devices (%d local)", started, jax.device_count(), jax.local_device_count())
  if unapplied:
    log.info("JAX had already started: not applied: %s", " ".join(unapplied))
  for note in chunk_notes(cfg) + platform_cpu.start(cfg.model):
    log.info("%s", note)
  t = cfg.train

  # --- Data: each process reads its own shard of every global batch.
  tok = tokenize.build_tokenizer(cfg.data, workdir if lead else None)   # one writer per shared file
  if tok.vocab_size > cfg.model.vocab_size:
    raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                      f"{tok.name} tokenizer's vocabulary ({tok.vocab_size})")
  if lead:
    tok.save(workdir)
  n_proc = jax.process_count()
  train_it = pipeline.build_dataset(cfg.data, tok, "train", batch_size=t.batch_size // n_proc,
                                    seed=t.seed, process_index=jax.process_index(),
                                    process_count=n_proc)
  val = evaluate.val_batches(cfg, tok, t.eval_steps)
  bpt = sources.bytes_per_token(cfg.data, tok, "val")

  # --- Model, optimizer, mesh, sharded state.
  model = modelzoo.build(cfg.model)
  tx, schedule = step_lib.make_optimizer(t)
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
  make_state, rng, abstract_state, state_sh = step_lib.init_state(model, tx, cfg, mesh)
  b_sh = sharding.batch_sharding(mesh)
  distributed.check_batch_layout(b_sh, (t.batch_size, cfg.data.seq_len))
  ckpt = Checkpointer(workdir, cfg.ckpt.every, cfg.ckpt.keep, cfg.ckpt.async_save)
  if args.check:
    ckpt.check_compatible(abstract_state)
    ckpt.close()
    log.info("check passed: config, data (%s), tokenizer (%d ids), mesh %s and %d checkpoints in "
             "%s; not compiling (--check)", cfg.data.source, tok.vocab_size, dict(mesh.shape),
             len(ckpt.steps()), ckpt.dir)
    return 0
  start, state, data_state = ckpt.restore(abstract_state)
  if state is None:
    with sharding.activate(mesh):   # traced on the mesh: kernels in init run per shard too
      state, start = make_state(rng), 0
  else:
    train_it.set_state(data_state)
    log.info("resumed from step %d (%s)", start, ckpt.dir)

  # --- The step, compiled ahead of time: shapes, memory and FLOPs are known before step 1.
  with sharding.activate(mesh):
    t0 = time.time()
    compiled = step_lib.jit_train_step(model, tx, schedule, cfg, state_sh, b_sh).lower(
        abstract_state, step_lib.batch_spec(cfg, b_sh)).compile()
    eval_fn = jax.jit(step_lib.make_eval_step(model, cfg), in_shardings=(state_sh.params, b_sh))
  n_params = metrics_lib.param_count(state.params)
  flops_tok = modelzoo.flops_per_token(cfg.model, n_params, cfg.data.seq_len)
  peak, peak_src = metrics_lib.device_peak_flops()
  if lead:
    describe(compiled, cfg, n_params, time.time() - t0, flops_tok, peak, peak_src)

  # --- Loop. Metrics are fetched one step late so the host never waits for the device.
  stop = {"signal": None}
  if n_proc == 1:
    signal.signal(signal.SIGTERM, lambda s, f: stop.__setitem__("signal", s))
  # else JAX's preemption service owns SIGTERM and makes every process stop at the same step.
  writer = metrics_lib.Writer(workdir, active=lead)
  bar = progress_bar(start, t.steps, lead)
  pending, prev, tic, toc_step, last_eval = None, None, time.time(), start, {}
  step = start

  def check_finite(done_step, out):
    """Stops (exit 3) once more than train.max_bad_steps updates in a row were non-finite."""
    bad = int(out["bad_steps"])
    if bad <= t.max_bad_steps:
      return
    ckpt.save(step, state, train_it.get_state(), force=True)
    ckpt.wait()
    raise cli.Stopped(f"{bad} non-finite updates in a row (steps {done_step - bad + 1}.."
                      f"{done_step}) exceed train.max_bad_steps={t.max_bad_steps}: stopped. "
                      "Skipped updates leave the state unchanged; the last good state is saved "
                      f"as {ckpt.dir / str(step)}")

  try:
    while step < t.steps:
      batch = distributed.to_global(next(train_it), b_sh)
      state, out = compiled(state, batch)
      step += 1
      if pending is not None:
        report(pending, bar, writer)
      pending = None
      if prev is not None:
        check_finite(*prev)     # the step before: finished by now, so this hardly waits
      prev = (step, out)
      if step % t.log_every == 0 or step in (1, t.steps):    # step 1: the curve's start
        out = jax.device_get(out)
        tps = (step - toc_step) * t.batch_size * cfg.data.seq_len / (time.time() - tic)
        out.update(tokens_per_sec=tps, mfu=tps * flops_tok / (jax.device_count() * peak))
        pending, tic, toc_step = (step, out), time.time(), step
      if step % t.eval_every == 0 or step == t.steps:
        last_eval = evaluate.evaluate(eval_fn, state.params, val, bpt, b_sh, mesh)
        writer.write(step, last_eval)
        if lead:
          bar.write(f"step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
      preempted = stop["signal"] is not None or distributed.preemption_point(step)
      ckpt.save(step, state, train_it.get_state(), force=step == t.steps or preempted)
      if preempted:
        ckpt.wait()
        log.warning("preempted (%s): checkpoint at step %d saved, exiting",
                    f"signal {stop['signal']}" if stop["signal"] else "JAX preemption notice", step)
        break
    if pending is not None:
      report(pending, bar, writer)
    if prev is not None:
      check_finite(*prev)
  finally:
    try:
      ckpt.close()
    finally:
      writer.close()
      bar.close()
  if lead and last_eval:
    log.info("done: step %d, %s", step, json.dumps({k: round(v, 4) for k, v in last_eval.items()}))
  return 0


# The chunked recurrent kernels pad T up to a multiple of their chunk (the padded tokens leave the
# state unchanged): allowed, but the padding is compute spent on nothing, so say so.
CHUNK_FIELDS = {"mamba": "ssm_chunk", "mamba2": "ssm_chunk", "deltanet": "dn_chunk"}


def chunk_notes(cfg: base.Config) -> list[str]:
  field_, T = CHUNK_FIELDS.get(cfg.model.name), cfg.data.seq_len
  if not field_ or T % getattr(cfg.model, field_) == 0:
    return []
  C = getattr(cfg.model, field_)
  padded = -(-T // C) * C
  return [f"note: data.seq_len={T} is not a multiple of model.{field_}={C}; the kernel pads each "
          f"sequence to {padded} automatically ({padded - T} padded tokens, "
          f"{(padded - T) / padded:.0%} of the scan's work)"]


def describe(compiled, cfg, n_params, compile_s, flops_tok, peak, peak_src):
  mem = compiled.memory_analysis()
  xla_flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
  log.info("model %s: %s parameters; compiled in %.1fs", cfg.model.name, f"{n_params:,}", compile_s)
  if mem is not None:
    log.info("memory per device: args %.1f MiB, temp %.1f MiB, output %.1f MiB",
             mem.argument_size_in_bytes / 2**20, mem.temp_size_in_bytes / 2**20,
             mem.output_size_in_bytes / 2**20)
  log.info("FLOPs per step: model %.3g (6N + attention), XLA cost analysis %.3g; peak %.3g "
           "FLOP/s per device (%s)", flops_tok * cfg.train.batch_size * cfg.data.seq_len,
           xla_flops, peak, peak_src)


def progress_bar(start, total, lead):
  from tqdm import tqdm
  return tqdm(total=total, initial=start, disable=not lead, dynamic_ncols=True, unit="step",
              file=sys.stdout, mininterval=1.0)


def report(pending, bar, writer):
  step, out = pending
  writer.write(step, out)
  bar.update(step - bar.n)
  bar.set_postfix(loss=f"{out['loss']:.4f}", tok_s=f"{out['tokens_per_sec']:.0f}",
                  mfu=f"{out['mfu']:.1%}")


if __name__ == "__main__":
  sys.exit(cli.run(main))
