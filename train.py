"""Train a seqzoo model: one pure `train_step(state, batch)`, jitted once with explicit shardings.

    python train.py --config configs/quickstart.py [--workdir runs/qs] [key.path=value ...]

Re-running the same command with the same workdir resumes from its latest checkpoint and continues
bitwise identically to an uninterrupted run. SIGTERM (preemption) saves a checkpoint and exits 0;
Ctrl-C saves one and exits 130 (a second Ctrl-C aborts at once). The workdir is written (its
config.json, tokenizer) only once every check passed: a refused command leaves it as it was.
On several hosts, the same command on each (see training/distributed.py, docs/multihost.md).
`--check` validates config, data, tokenizer, mesh and checkpoints, then exits without compiling
and without writing anything.
`--aot TOPOLOGY` (v5e:2x2, v5p:4x4x4, v6e:4x4, v4:2x2x1, h100:1x1x8, a100:1x1x8) compiles this
step for that slice on this host's CPU (libtpu / the CUDA plugin, `pip install -e '.[tpu]'` or
`'.[gpu-aot]'`), prints memory per device against HBM, checked FLOPs, a roofline step time,
tokens/s per chip and an MFU estimate (training/aot.py), writes nothing, and exits 0 if it fits.
Exit codes (training/cli.py): 0 done (or preempted and saved; --aot: fits), 2 a user error, 1 a
checkpoint write/read failure, 3 stopped after too many non-finite updates in a row (the last
good state is saved), 4 --aot: the step does not fit in the topology's HBM, 130 Ctrl-C.

This file is the command line and the loop; what it runs lives in packages: data/ (tokens ->
batches), modelzoo/ (the model), layers/sharding.py (the mesh), training/ (state, optimizer and
step, checkpoints, metrics, evaluation, multi-process and CPU set-up).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import jax

import modelzoo
from configs import base
from configs.base import ConfigError
from data import pipeline, tokenize
from layers import sharding
from training import aot, cli, distributed, evaluate, platform_cpu
from training import metrics as metrics_lib
from training import step as step_lib
from training.checkpoint import Checkpointer
from training.workdir import check_workdir, claim_workdir

log = logging.getLogger("seqzoo")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="configs/<name>.py")
  p.add_argument("--workdir", default=None, help="run directory (default runs/<config name>)")
  p.add_argument("--check", action="store_true",
                 help="validate config, data, tokenizer, mesh and checkpoints; exit before compiling, "
                      "writing nothing")
  p.add_argument("--from-scratch", action="store_true",
                 help="start from step 0 although checkpoints of this run were set aside as "
                      "unreadable (<workdir>/checkpoints_corrupt); without it train.py refuses")
  cli.add_allow_unverified(p, "resume from")
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
  n_proc = jax.process_count()
  stop = Signals(n_proc == 1)      # until armed, a signal ends the command at once, nothing written
  if not lead:
    log.setLevel(logging.WARNING)                     # one process logs; all report warnings
  base.validate(cfg, jax.device_count())
  modelzoo.check(cfg.model)
  workdir = Path(args.workdir or f"runs/{Path(args.config).stem}")
  if lead:
    check_workdir(workdir, cfg)     # first; nothing is written to it until every check passed
  log.info("config:\n%s", base.to_json(cfg))
  log.info("%s; %d devices (%d local)", started, jax.device_count(), jax.local_device_count())
  if unapplied:
    log.info("JAX had already started: not applied: %s", " ".join(unapplied))
  for note in chunk_notes(cfg) + platform_cpu.start(cfg.model):
    log.info("%s", note)
  t = cfg.train

  # --- Data: each process reads its own shard of every global batch.
  # A task source (data/tasks.py) has none: its ids are the task's, checked by base.validate.
  saved = lead and (workdir / tokenize.FILENAME).is_file()    # a resumed run's own tokenizer
  tok = tokenize.build_tokenizer(cfg.data, workdir if saved else None)   # saved by claim_workdir
  if tok is not None and tok.vocab_size > cfg.model.vocab_size:
    raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the "
                      f"{tok.name} tokenizer's vocabulary ({tok.vocab_size})")
  train_it = pipeline.build_dataset(cfg.data, tok, "train", batch_size=t.batch_size // n_proc,
                                    seed=t.seed, process_index=jax.process_index(),
                                    process_count=n_proc)
  val = evaluate.val_batches(cfg, tok, t.eval_steps)
  bpt = evaluate.bytes_per_token(cfg, tok)

  # --- Model, optimizer, mesh, sharded state.
  model = modelzoo.build(cfg.model)
  tx, schedule = step_lib.make_optimizer(t)
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, jax.device_count()))
  make_state, rng, abstract_state, state_sh = step_lib.init_state(model, tx, cfg, mesh)
  b_sh = sharding.batch_sharding(mesh)
  distributed.check_batch_layout(b_sh, (t.batch_size, cfg.data.seq_len))
  steps = check_checkpoints(workdir, cfg, abstract_state)    # another model's: refused here
  if args.check:
    log.info("check passed: config, data (%s), tokenizer (%s ids), mesh %s and %d checkpoints in "
             "%s; not compiling, nothing written (--check)", cfg.data.source,
             "no: a task's" if tok is None else tok.vocab_size,
             dict(mesh.shape), len(steps), workdir / "checkpoints")
    return 0
  if not steps and not args.from_scratch:
    refuse_a_silent_fresh_start(workdir)

  # --- Every check passed. From here (before the first compile) a signal stops the loop at a
  # step boundary, saving the state trained so far. Once a checkpoint restored (or there is
  # none), the workdir becomes this run's.
  stop.arm()
  ckpt = Checkpointer(workdir, cfg.ckpt.every, cfg.ckpt.keep, cfg.ckpt.async_save)
  start, state, data_state = ckpt.restore(abstract_state, allow_unverified=args.allow_unverified)
  claim_workdir(workdir, cfg, tok, lead)
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
    eval_fn = jax.jit(step_lib.make_eval_step(model, cfg),
                      in_shardings=(state_sh.params, b_sh, state_sh.buffers))
  n_params = metrics_lib.param_count(state.params)
  flops_tok = modelzoo.flops_per_token(cfg.model, n_params, cfg.data.seq_len)
  peak, peak_src = metrics_lib.device_peak_flops()
  if lead:
    describe(compiled, cfg, n_params, time.time() - t0, flops_tok, peak, peak_src)

  if stop.signal is not None:     # came while restoring or compiling: nothing trained to save
    ckpt.close()
    return stopped_at(stop.signal, start, start, ckpt.dir)

  # --- Loop. Metrics are fetched one step late so the host never waits for the device.
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

  preempted = None
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
        last_eval = evaluate.evaluate(lambda p, b: eval_fn(p, b, state.buffers), state.params,
                                      val, bpt, b_sh, mesh)
        writer.write(step, last_eval)
        if lead:
          bar.write(f"step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
      preempted = stop.signal or ("JAX preemption notice" if distributed.preemption_point(step)
                                  else None)
      ckpt.save(step, state, train_it.get_state(), force=step == t.steps or preempted is not None)
      if preempted:
        ckpt.wait()
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
  if preempted is not None:
    return stopped_at(preempted, step, start, ckpt.dir)
  if lead and last_eval:
    log.info("done: step %d, %s", step, json.dumps({k: round(v, 4) for k, v in last_eval.items()}))
  curves = evaluate.regression_curves(cfg, model, state.params, val, b_sh, mesh, state.buffers)
  if lead and curves is not None:      # in-context regression: error per context length
    (workdir / evaluate.REGRESSION_FILE).write_text(json.dumps({"step": step, **curves}))
    log.info("error per context length k (model / ols / gd / zero) in %s: %s", evaluate.REGRESSION_FILE,
             "  ".join(f"k={k}: {m:.3f}/{o:.3f}/{g:.3f}/{z:.3f}" for k, m, o, g, z in
                       list(zip(*(curves[n] for n in ("k", "model", "ols", "gd", "zero"))))[::4]))
  return 0


class Signals:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) on one process; with several, JAX's preemption
  service owns SIGTERM (every process stops at the same step) and Ctrl-C just ends the command.

  Until arm() (every check passed, nothing written yet) either ends the command at once. Armed
  (before the first compile: a compile cannot be interrupted, and orbax's restore must not be),
  a signal is recorded and the loop stops at the next step boundary, saving that step. A second
  Ctrl-C aborts at once. cli.run puts the previous handlers back."""

  def __init__(self, single_process: bool):
    self.signal, self.armed = None, False
    if single_process:
      signal.signal(signal.SIGTERM, self._on)
      signal.signal(signal.SIGINT, self._on)

  def arm(self):
    self.armed = True

  def _on(self, sig, frame):
    if not self.armed:
      if sig == signal.SIGINT:
        raise cli.Interrupted("before training started: nothing written")
      raise cli.Preempted(f"signal {sig} before training started: nothing written")
    self.signal = self.signal or sig
    if sig == signal.SIGINT:
      signal.signal(signal.SIGINT, abort)
      # At once (a step or a save can take long), raw: a handler must not re-enter sys.stdout.
      os.write(1, b"\nCtrl-C: stopping after this step and saving it (Ctrl-C again to abort)\n")


def abort(sig, frame):
  raise cli.Interrupted("a second Ctrl-C: aborted (a checkpoint being written is completed)")


def stopped_at(why, step: int, start: int, ckpt_dir: Path) -> int:
  """After a signal or JAX's preemption notice stopped the loop at `step`: 0 (preempted), or
  130 for Ctrl-C (cli.Interrupted), said in one line."""
  what = (f"checkpoint at step {step} saved in {ckpt_dir}" if step > start else
          f"stopped before step {start + 1}: nothing trained, nothing to save")
  if why == signal.SIGINT:
    raise cli.Interrupted(what)
  log.warning("preempted (%s): %s, exiting", why if isinstance(why, str) else f"signal {why}", what)
  return 0


def check_checkpoints(workdir: Path, cfg: base.Config, abstract_state) -> list[int]:
  """The workdir's checkpoint steps, read without changing anything (read_only: no directory
  created, no debris cleaned); ConfigError if they hold another model's arrays."""
  # Agreed by all processes before any creates the directory: a process that saw it (made by
  # another's Checkpointer meanwhile) would open orbax's manager alone and its barriers mismatch.
  if not distributed.any_process((workdir / "checkpoints").is_dir()):
    return []
  ckpt = Checkpointer(workdir, cfg.ckpt.every, cfg.ckpt.keep, read_only=True)
  try:
    ckpt.check_compatible(abstract_state)
    return ckpt.steps()
  finally:
    ckpt.close()


def refuse_a_silent_fresh_start(workdir: Path):
  """No checkpoint left, but some were set aside as unreadable (by an earlier train.py): starting
  from step 0 would silently throw the run away. Ask to be told."""
  aside = workdir / "checkpoints_corrupt"
  if aside.is_dir() and any(aside.iterdir()):
    raise ConfigError(f"checkpoints of this run were set aside as unreadable in {aside}; pass "
                      "--from-scratch to start again from step 0 in this workdir, or use a new "
                      "--workdir")


# The chunked recurrent kernels pad T up to a multiple of their chunk (the padded tokens leave the
# state unchanged): allowed, but the padding is compute spent on nothing, so say so.
CHUNK_FIELDS = {"mamba": "ssm_chunk", "mamba2": "ssm_chunk", "deltanet": "dn_chunk"}


def chunk_notes(cfg: base.Config) -> list[str]:
  field_, T = CHUNK_FIELDS.get(cfg.model.name), cfg.data.seq_len
  if not field_ or T % getattr(cfg.model, field_) == 0:
    return []
  C = getattr(cfg.model, field_)
  padded = -(-T // C) * C
  return [(f"note: data.seq_len={T} is not a multiple of model.{field_}={C}; the kernel pads each "
           f"sequence to {padded} automatically ({padded - T} padded tokens, "
           f"{(padded - T) / padded:.0%} of the scan's work)")]


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
  acc = {"acc": f"{out['accuracy']:.3f}"} if "accuracy" in out else {}   # a token task
  bar.set_postfix(loss=f"{out['loss']:.4f}", **acc, tok_s=f"{out['tokens_per_sec']:.0f}",
                  mfu=f"{out['mfu']:.1%}")


if __name__ == "__main__":
  sys.exit(cli.run(main))
