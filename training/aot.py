"""Compile exactly train.py's step for a named TPU or GPU topology, from any host (train.py --aot).

    python train.py --config configs/quickstart.py --aot v5e:2x2 [key.path=value ...]

The step is training/step.py's `jit_train_step` (train.py's: same model, optimizer, shardings,
donation and batch spec), traced under `sharding.activate(mesh)` over the topology's devices
(training/hardware.py) and compiled by the real TPU or GPU compiler. Reported per device: argument,
temporary and output bytes against the chip's HBM; FLOPs and bytes accessed per step; a roofline
step time; tokens/s per chip and the MFU it implies (an estimate: no kernel runs here).

FLOPs. XLA's cost analysis counts a `while` body once whatever its trip count, so for the step as
compiled (layers `nn.scan`-ned, grad-accumulation micro-batches in a scan) it counts one layer:
3-4x low for the 4-layer tiny configs. And a Pallas kernel is a custom call XLA counts as 0 FLOPs.
The FLOPs reported are therefore built as:
  1. XLA's count of loop-free versions of the same step: model.scan_layers=false, the layer stack
     cut to 1 and to 2 of the units it repeats (modelzoo.layer_unit: one layer for most models, "DS"
     for DeltaNet's SWA hybrid, a Mamba-2 pattern's unit). A step's FLOPs are affine in the number
     of units n, so F(n) = F(1) + (n - 1) (F(2) - F(1)) is exact for what XLA counts; a stack that
     repeats no unit is compiled whole, unrolled. Bytes accessed are extrapolated the same way.
     A step with no `while` in its compiled HLO is counted as it is. With train.grad_accum=A the
     versions run one micro-batch (train.grad_accum=1) and count A times: exact for the forward
     and backward passes; the optimizer update is counted A times (~10 FLOPs per parameter against
     6 per parameter per token: negligible; its bytes are not, so bytes accessed are an
     overestimate by A-1 updates' traffic).
  2. plus the kernels' interior from the model's own count (modelzoo.kernel_flops_per_token:
     attention scores and values, the scans) when the program calls Pallas kernels. With
     model.attn_impl=xla the kernels' jnp paths are in XLA's count, their chunk loops once: a lower
     bound, and the report says so.
Checked (tests/test_aot.py): for each tiny config on v5e:2x2 the total is within FLOPS_TOL of the
model count (6N + attention/mixers; measured 1.004-1.036x, while the step's own count is 0.24-0.28x
for the scanned ones); the excess is elementwise work XLA counts and 6N leaves out
(norms, GELU, softmax, AdamW), plus remat's recomputation when it is on. XLA:GPU returns no cost
analysis: on GPUs the FLOPs are the model's and the roofline is compute-only.

eval.py --aot and export.py --aot compile their programs through `memory_report` (memory per device
only: what `lower(devices)` returns, compiled for the topology's devices).

Roofline: step time = max(FLOPs / peak FLOP/s, bytes accessed / HBM bandwidth) per device;
tokens/s per chip = tokens per device per step / step time x devices per chip; MFU estimate = the
model's FLOPs / (step time x peak). Exit codes (training/cli.py): 0 fits, 4 (cli.DoesNotFit) if the
program needs more HBM than a device has (or the compiler says it ran out), 2 for user errors.
"""
from __future__ import annotations

import dataclasses
import math
import time

import jax

import modelzoo
from configs import base
from layers import sharding
from training import cli, hardware, step
from training.metrics import param_count

FLOPS_TOL = 0.06          # |total / model - 1| accepted for the tiny configs (measured +0.4..3.6%)
KERNEL_CALLS = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}


def compile_on_this_host():
  """--aot: this host's CPU runs the TPU/GPU compiler; no accelerator is looked for. Call before
  any backend starts."""
  jax.config.update("jax_platforms", "cpu")


def verdict(r: dict, name: str) -> int:
  """Prints the report; 0 if the program fits, else raises cli.DoesNotFit (exit code 4)."""
  print(show(r, name))
  if not r["fits"]:
    raise cli.DoesNotFit(f"{name} on {r['topology']}: see the memory per device above")
  return 0


def setup(cfg: base.Config, devices):
  """What train.py builds before compiling, on `devices`: model, optimizer, mesh, sharded state."""
  base.validate(cfg, len(devices))
  modelzoo.check(cfg.model)
  model = modelzoo.build(cfg.model)
  tx, schedule = step.make_optimizer(cfg.train)
  mesh = sharding.make_mesh(base.mesh_shape(cfg.mesh, len(devices)), devices)
  _, _, abstract, state_sh = step.init_state(model, tx, cfg, mesh)
  b_sh = sharding.batch_sharding(mesh)
  return model, tx, schedule, mesh, abstract, state_sh, b_sh


def lower_step(cfg: base.Config, devices):
  """train.py's step for `cfg` lowered for `devices`: (lowered, abstract (state, batch))."""
  model, tx, schedule, mesh, abstract, state_sh, b_sh = setup(cfg, devices)
  args = (abstract, step.batch_spec(cfg, b_sh))
  with sharding.activate(mesh):
    lowered = step.jit_train_step(model, tx, schedule, cfg, state_sh, b_sh).lower(*args)
  return lowered, args


def compile_step(cfg: base.Config, devices, options=None):
  """train.py's step for `cfg` compiled for `devices`: (compiled, abstract state)."""
  lowered, args = lower_step(cfg, devices)
  return lowered.compile(options or None), args[0]


def shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def xla_cost(compiled) -> tuple[float, float] | None:
  cost = compiled.cost_analysis()     # None on XLA:GPU
  return (cost["flops"], cost["bytes accessed"]) if cost and "flops" in cost else None


def cut(cfg: base.Config, units: int) -> base.Config:
  """The same run with `units` repeats of the stack's unit, unrolled, on one micro-batch."""
  m, t, p = cfg.model, cfg.train, modelzoo.layer_unit(cfg.model)
  model = dataclasses.replace(m.with_depth(units * p), scan_layers=False)
  train = dataclasses.replace(t, batch_size=t.batch_size // t.grad_accum, grad_accum=1)
  return dataclasses.replace(cfg, model=model, train=train)


def count_flops(cfg: base.Config, devices, options) -> tuple[float, float, str]:
  """(FLOPs, bytes accessed) per device per step as XLA counts them loop-free (docstring, 1.)."""
  p, A = modelzoo.layer_unit(cfg.model), cfg.train.grad_accum
  n = cfg.model.n_layers // p
  f1, b1 = xla_cost(compile_step(cut(cfg, 1), devices, options)[0])
  how = "XLA's count of the step unrolled"
  if n > 1:
    f2, b2 = xla_cost(compile_step(cut(cfg, 2), devices, options)[0])
    f1, b1 = f1 + (n - 1) * (f2 - f1), b1 + (n - 1) * (b2 - b1)
    how = f"XLA's counts of the step unrolled at 1 and 2 units of {p} layer(s), extrapolated to {n}"
  if A > 1:
    how += f", x {A} micro-batches"
  return A * f1, A * b1, how


def target(topology: str) -> tuple[hardware.Chip, list, dict]:
  """(chip, devices, report head) of a topology: what one device has (a v4 chip is 2 devices)."""
  chip, devices = hardware.topology_devices(topology)
  n = len(devices)
  per_chip = n // len({tuple(getattr(d, "coords", (d.id,))) for d in devices})  # v4: 2 cores
  return chip, devices, {"topology": topology, "chip": chip.name,
                         "device_kind": devices[0].device_kind, "devices": n,
                         "devices_per_chip": per_chip, "hbm_bytes": chip.hbm_bytes / per_chip}


def compile_memory(r: dict, lowered, args, options=None):
  """Compiles `lowered` (traced for the topology's devices); adds its memory per device to the
  report `r` (fits, or the compiler's words and the arguments' bytes when it refuses for lack of
  memory, then returns None). `args`: the abstract sharded arguments lowered with."""
  t0 = time.perf_counter()
  try:
    compiled = lowered.compile(options or None)
  except jax.errors.JaxRuntimeError as e:     # XLA:TPU refuses a program that cannot fit
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    r.update(fits=False, compiler_says=str(e).splitlines()[0], argument_bytes=shard_bytes(args))
    return None
  r["compile_s"] = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  total = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
           - mem.alias_size_in_bytes)
  r.update(argument_bytes=mem.argument_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
           output_bytes=mem.output_size_in_bytes - mem.alias_size_in_bytes, total_bytes=total,
           headroom=1 - total / r["hbm_bytes"], fits=total <= r["hbm_bytes"])
  return compiled


def memory_report(topology: str, lower) -> dict:
  """Memory per device of any program for `topology`: `lower(devices)` returns (lowered, abstract
  args, mesh sizes) traced for those devices (eval.py's and export.py's --aot)."""
  chip, devices, r = target(topology)
  lowered, args, mesh = lower(devices)
  r["mesh"] = mesh
  compile_memory(r, lowered, args, hardware.compiler_options(chip))
  return r


def report(cfg: base.Config, topology: str) -> dict:
  """Compile for `topology` and return the report (printed by `show`)."""
  chip, devices, r = target(topology)
  n = len(devices)
  try:                        # e.g. a mesh that does not match the topology: before compiling
    base.validate(cfg, n)
  except base.ConfigError as e:
    raise base.ConfigError(f"--aot {topology} ({n} devices): {e}") from None
  per_chip = r["devices_per_chip"]
  peak, bw = chip.peak_flops / per_chip, chip.hbm_bw / per_chip
  options = hardware.compiler_options(chip)
  r["mesh"] = base.mesh_shape(cfg.mesh, n)
  lowered, args = lower_step(cfg, devices)
  compiled = compile_memory(r, lowered, args, options)
  if not r["fits"]:
    return r
  abstract = args[0]

  m, T, B = cfg.model, cfg.data.seq_len, cfg.train.batch_size
  tokens = B * T / n                                  # per device per step
  n_params = param_count(abstract.params)
  model_flops = modelzoo.flops_per_token(m, n_params, T) * tokens
  hlo = compiled.as_text()
  kernel_calls = hlo.count(f'custom_call_target="{KERNEL_CALLS[chip.platform]}"')
  r.update(params=n_params, model_flops=model_flops, kernel_calls=kernel_calls, notes=[])
  raw = xla_cost(compiled)
  if raw is None:
    r["notes"].append("XLA:GPU gives no cost analysis (None): FLOPs are the model's; with no "
                      "bytes accessed the step time is a compute-only lower bound and MFU is not "
                      "estimated")
    flops, bytes_ = model_flops, None
  else:
    t1 = time.perf_counter()
    if " while(" in hlo:
      xla_flops, bytes_, how = count_flops(cfg, devices, options)
    else:                         # e.g. an unrolled stack: XLA's count of the step is whole
      xla_flops, bytes_, how = *raw, "XLA's count of the step: it has no loops"
    kernels = modelzoo.kernel_flops_per_token(m, T) * tokens if kernel_calls else 0.0
    if not kernel_calls:
      r["notes"].append("no Pallas kernels in the step (model.attn_impl=xla?): their jnp paths' "
                        "chunk loops are counted once by XLA, so FLOPs are a lower bound")
    flops = xla_flops + kernels
    r.update(xla_raw_flops=raw[0], xla_flops=xla_flops, kernel_flops=kernels, flops_method=how,
             count_s=time.perf_counter() - t1)
  step_s = max(flops / peak, (bytes_ or 0.0) / bw)
  r.update(flops=flops, bytes_accessed=bytes_, flops_vs_model=flops / model_flops,
           step_s=step_s, bound="memory" if bytes_ and bytes_ / bw > flops / peak else "compute",
           tokens_per_s_per_chip=tokens * per_chip / step_s,
           mfu=model_flops / step_s / peak if bytes_ is not None else None,
           peak_flops=peak, hbm_bw=bw)
  return r


def show(r: dict, config_name: str = "") -> str:
  """The report as a table (bytes in MiB, per device)."""
  mib = lambda b: f"{b / 2**20:12,.1f} MiB"
  mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
  lines = [f"aot: {config_name} on {r['topology']}: {r['devices']} x {r['device_kind']} "
           f"({r['devices_per_chip']} per chip), mesh {mesh}"
           + (f"; compiled in {r['compile_s']:.1f} s" if "compile_s" in r else "")]
  if "temp_bytes" not in r:
    lines += [f"  arguments            {mib(r['argument_bytes'])}",
              f"  DOES NOT FIT: the compiler says: {r['compiler_says']}"]
    return "\n".join(lines)
  verdict = "fits" if r["fits"] else "DOES NOT FIT"
  lines += ["memory per device",
            f"  arguments            {mib(r['argument_bytes'])}",
            f"  temporaries          {mib(r['temp_bytes'])}",
            f"  outputs (unaliased)  {mib(r['output_bytes'])}",
            f"  total                {mib(r['total_bytes'])} of {r['hbm_bytes'] / 2**30:.1f} GiB "
            f"HBM: {verdict} ({r['headroom']:.1%} headroom)"]
  if not r["fits"] or "model_flops" not in r:    # a memory_report ends here
    return "\n".join(lines)
  lines += ["FLOPs per step per device",
            f"  model (6N + attention/mixers)  {r['model_flops']:.4g}   ({r['params']:,} params)"]
  if "xla_flops" in r:
    lines += [f"  XLA, outside the kernels       {r['xla_flops']:.4g}   ({r['flops_method']}, "
              f"{r['count_s']:.1f} s; the step's own count, loops once: {r['xla_raw_flops']:.4g})",
              f"  + kernels (model's count)      {r['kernel_flops']:.4g}   "
              f"({r['kernel_calls']} Pallas custom calls)",
              f"  = total                        {r['flops']:.4g}   "
              f"({r['flops_vs_model']:.3f} x model)",
              f"bytes accessed per step        {r['bytes_accessed']:.4g}"]
  at_most = "" if r["mfu"] is not None else "<= "
  lines += [f"roofline step time             {'>= ' if at_most else ''}{r['step_s'] * 1e3:.4g} ms "
            f"({r['bound']}-bound at {r['peak_flops']:.3g} FLOP/s, {r['hbm_bw']:.3g} B/s "
            "per device)",
            f"tokens/s per chip              {at_most}{r['tokens_per_s_per_chip']:,.0f}"]
  if r["mfu"] is not None:
    lines.append(f"MFU estimate                   {r['mfu']:.1%}")
  lines += [f"note: {n}" for n in r["notes"]]
  return "\n".join(lines)
