"""Export a run's parameters to share or serve; import shared parameters into a run to train on.

    python export.py --workdir runs/X --format safetensors --out exports/X      # + config.json
    python export.py --workdir runs/X --format hf --out exports/X-hf           # transformers folder
    python export.py --workdir runs/X --format stablehlo --out exports/X-hlo   # jax.export modules
    python export.py --import exports/X-hf --workdir runs/Y [--config configs/quickstart.py] [k=v ...]
    python export.py --workdir runs/X --aot v5e:2x2 [--batch 8 --seq-len T --dtype bfloat16]
    python export.py --workdir runs/X --to-norm crmsnorm --out runs/X-crms   # Pre-LN -> Pre-CRMSNorm

Nothing is overwritten and nothing is half-written: --out must be new or an empty folder (or
--force, which replaces it), and never the run's workdir, inside it or around it (not even with
--force); --import needs a new or empty --workdir. Each is written into a temp folder beside it
(`<out>.tmp-<pid>`) and renamed into place when complete; on any failure the temp folder is removed
and the destination is as it was.

`--format hf` works for the GPT-2 style (GPT2LMHeadModel) and Llama style (LlamaForCausalLM)
decoders; any other model is refused with the reason. `--dtype bfloat16` casts while restoring.
`--import` reads a seqzoo safetensors export or a Hugging Face folder (config.json + safetensors)
and writes a run with a step-0 checkpoint: the printed train.py command continues training it (data
and train settings come from --config and the overrides; the model from the imported folder).

Parameters are restored onto the run's own mesh (config.json's mesh.*), or where these devices
cannot hold it onto the nearest mesh they can, said in a note on stderr (training/workdir.py);
every format then gathers them to the host. The stablehlo modules are one-device programs. --aot
TOPOLOGY compiles that forward pass for --batch rows with the parameters sharded on the run's mesh
over a TPU/GPU slice's devices (as `train.py --aot`), prints memory per device against HBM, and
exits 4 if it does not fit; it reads config.json only. --to-norm rmsnorm|crmsnorm writes a new run
at --out (as --import does) whose model computes the same logits with RMSNorm / CRMSNorm in place
of a pre-norm decoder's LayerNorm (interop/norm_convert.py). Exit codes: training/cli.py.
The work is in interop/ (params_io.py, hf.py, stablehlo.py, norm_convert.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import jax

from configs import base
from configs.base import ConfigError
from interop import hf, params_io
from training import cli
from training import workdir as workdir_lib

FORMATS = ("safetensors", "hf", "stablehlo")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="the run to export, or (with --import) to create")
  p.add_argument("--format", choices=FORMATS, help="what to write to --out")
  p.add_argument("--out", help="output folder: new or empty (or --force); never the run's workdir")
  p.add_argument("--force", action="store_true",
                 help="replace a non-empty --out (atomically: the old folder goes once the new one "
                      "is complete); never the run's workdir")
  cli.add_allow_unverified(p, "export from")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                 help="parameter dtype of the export (default: the run's model.param_dtype)")
  p.add_argument("--seq-len", type=int, default=None,
                 help="stablehlo: forward length T (default data.seq_len)")
  p.add_argument("--batch", type=int, default=1,
                 help="stablehlo: decode batch size; --aot: the forward's rows")
  p.add_argument("--cache-len", type=int, default=None,
                 help="stablehlo: decode cache length (default model.max_len)")
  p.add_argument("--platforms", default=None,
                 help="stablehlo: comma-separated lowering platforms, e.g. cpu,cuda,tpu "
                      "(default: this machine's)")
  p.add_argument("--import", dest="src", default=None,
                 help="a seqzoo safetensors export or a Hugging Face folder to import")
  p.add_argument("--config", default="configs/quickstart.py",
                 help="--import of an HF folder: the data/train settings (the model comes from it)")
  p.add_argument("--aot", metavar="TOPOLOGY", default=None,
                 help="compile the forward pass for a TPU/GPU slice (v5e:2x2, v5p:4x4x4, ...) on "
                      "the run's mesh and report its memory per device; writes nothing")
  p.add_argument("--to-norm", choices=("rmsnorm", "crmsnorm"), default=None,
                 help="write a run at --out: this Pre-LN (or converted Pre-RMSNorm) decoder as a "
                      "Pre-RMSNorm / Pre-CRMSNorm one with the same logits")
  p.add_argument("overrides", nargs="*", help="--import: key.path=value applied to the run config")
  return p.parse_args(argv)


def seq_cache_len(args, cfg) -> tuple[int, int]:
  seq_len = args.seq_len or cfg.data.seq_len
  cache_len = args.cache_len or cfg.model.max_len
  if cfg.model.pos == "learned" and max(seq_len, cache_len) > cfg.model.max_len:
    raise ConfigError(f"--seq-len {seq_len} / --cache-len {cache_len} exceed model.max_len="
                      f"{cfg.model.max_len}, the learned position table")
  return seq_len, cache_len


def compile_for(args) -> int:
  """--aot: the forward pass compiled for a topology by this host's CPU; nothing runs."""
  from interop import stablehlo
  from training import aot
  aot.compile_on_this_host()
  cfg = params_io.served(workdir_lib.read_config(Path(args.workdir)))   # what export writes
  if args.dtype:
    cfg = base.apply_overrides(cfg, [f"model.param_dtype={args.dtype}"])
  seq_len, _ = seq_cache_len(args, cfg)
  r = aot.memory_report(args.aot, lambda devices: stablehlo.lower_forward(cfg, devices, seq_len,
                                                                        args.batch))
  return aot.verdict(r, f"forward [{args.batch}, {seq_len}] of {args.workdir}")


def export(args) -> dict:
  if not args.format or not args.out:
    raise ConfigError("export needs --format {safetensors,hf,stablehlo} and --out DIR")
  workdir, out = Path(args.workdir), Path(args.out)
  check_out(out, workdir, args.force)       # refuse before reading a checkpoint
  if args.format == "hf":
    hf.hf_arch(params_io.served(workdir_lib.read_config(workdir)).model)
  if args.format == "stablehlo":
    try:
      import flatbuffers  # noqa: F401 — jax.export's serializer needs it
    except ImportError:
      raise ConfigError("--format stablehlo needs the flatbuffers package: pip install "
                        "'flatbuffers>=24'") from None
  cfg, step, params = params_io.restore_params(workdir, args.step, args.dtype,
                                               allow_unverified=args.allow_unverified)
  write_atomically(out, "--out", lambda tmp: write_export(args, tmp, cfg, step, params))
  return {"format": args.format, "step": step, "out": str(out), "model": cfg.model.name,
          "param_dtype": cfg.model.param_dtype}


def write_export(args, out: Path, cfg, step: int, params) -> None:
  workdir = Path(args.workdir)
  if args.format == "safetensors":
    params_io.save_safetensors(out, params, cfg, workdir, meta={"step": step})
  elif args.format == "hf":
    hf_cfg, tensors = hf.to_hf(jax.device_get(params), cfg.model)
    hf.write_dir(out, hf_cfg, tensors)
  else:
    from interop import stablehlo
    seq_len, cache_len = seq_cache_len(args, cfg)
    platforms = args.platforms.split(",") if args.platforms else None
    manifest = stablehlo.write(out, cfg, params, seq_len, args.batch, cache_len, platforms)
    if manifest["decode_step"] is None:
      print(f"note: model {cfg.model.name!r} keeps no decode cache: forward only", file=sys.stderr)


def check_out(out: Path, workdir: Path, force: bool) -> None:
  """--out may only be somewhere nothing is lost: never the run itself (an export written into
  its workdir replaces its config.json, and the run no longer resumes), and new or empty unless
  --force."""
  o, w = out.resolve(), workdir.resolve()     # symlinks and `..` as the filesystem sees them
  if o == w or w in o.parents or o in w.parents:
    where = "is" if o == w else "is inside" if w in o.parents else "contains"
    raise ConfigError(f"--out {out} {where} the run's --workdir {workdir}; export to a folder "
                      "outside the run")
  if o.exists() and not o.is_dir():
    raise ConfigError(f"--out {out} is a file, not a folder")
  if o.is_dir() and any(o.iterdir()) and not force:
    raise ConfigError(f"--out {out} is not empty; pass --force to replace it, or choose a new "
                      "folder")


def check_new_workdir(workdir: Path, flag: str = "--workdir") -> None:
  """--import and --to-norm make a new run: never over a folder that holds anything (a run)."""
  if workdir.exists() and not (workdir.is_dir() and not any(workdir.iterdir())):
    raise ConfigError(f"{flag} {workdir} is not a new or empty folder"
                      + (" (it holds a run)" if (workdir / "config.json").exists() else "")
                      + f"; write the new run to a new {flag}")


def write_atomically(dest: Path, flag: str, write) -> None:
  """write(tmp) fills a temp folder beside `dest` (the same filesystem), renamed to `dest` once
  complete. On any failure (Ctrl-C too) the temp folder is removed and `dest` is as it was. An
  existing `dest` is moved aside, the new folder renamed in, and only then the old one deleted."""
  tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
  old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
  try:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
      write(tmp)
      if dest.exists():
        dest.rename(old)
      try:
        tmp.rename(dest)
      except BaseException:
        if old.exists():
          old.rename(dest)
        raise
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
  except OSError as e:
    raise ConfigError(f"{flag} {dest} could not be written ({e.strerror or e}); it is unchanged") \
        from None
  shutil.rmtree(old, ignore_errors=True)


def import_(args) -> dict:
  src, workdir = Path(args.src), Path(args.workdir)
  check_new_workdir(workdir)
  if not (src / "config.json").is_file():
    raise ConfigError(f"--import {src}: no config.json (neither a seqzoo export nor an HF folder)")
  meta = params_io.read_json(src / "config.json")
  if "model_type" in meta:
    hf_cfg, tensors = hf.read_dir(src)
    cfg = base.load(args.config)
    model_cfg, params = hf.from_hf(hf_cfg, tensors, cfg.model)
    cfg = base.apply_overrides(dataclasses.replace(cfg, model=model_cfg), args.overrides)
    tokenizer_src, kind = None, f"Hugging Face {hf_cfg['model_type']}"
  else:
    cfg, params = params_io.load_safetensors(src, args.overrides)
    tokenizer_src, kind = src, "seqzoo safetensors"
  written = []
  write_atomically(workdir, "--workdir", lambda tmp: written.append(
      params_io.write_run(tmp, cfg, params, tokenizer_src)))
  conf = workdir / written[0].name      # the config file train.py reads, renamed with its folder
  return {"imported": str(src), "as": kind, "workdir": str(workdir),
          "train": f"python train.py --config {conf} --workdir {workdir}"}


def convert_norm(args) -> dict:
  """--to-norm: the run's parameters converted (interop/norm_convert.py), written as a new run."""
  from interop import norm_convert
  if not args.out:
    raise ConfigError("--to-norm needs --out DIR, the new run to write")
  workdir, out = Path(args.workdir), Path(args.out)
  check_new_workdir(out, "--out")
  norm_convert.check_convertible(workdir_lib.read_config(workdir).model, args.to_norm)
  cfg, step, params = params_io.restore_params(workdir, args.step,
                                               allow_unverified=args.allow_unverified)
  model_cfg, params = norm_convert.convert(cfg.model, jax.device_get(params), args.to_norm)
  cfg = dataclasses.replace(cfg, model=model_cfg)
  written = []
  write_atomically(out, "--out", lambda tmp: written.append(
      params_io.write_run(tmp, cfg, params, workdir)))
  return {"converted": str(workdir), "step": step, "norm": args.to_norm, "workdir": str(out),
          "eval": f"python eval.py --workdir {out}",
          "train": f"python train.py --config {out / written[0].name} --workdir {out}"}


def main(argv=None) -> int:
  cli.setup_logging(sys.stderr)     # stdout is the JSON report: warnings go to stderr
  args = parse_args(argv)
  if args.aot:
    if args.src:
      raise ConfigError("--aot compiles a run's forward pass: not with --import")
    return compile_for(args)
  if args.to_norm:
    if args.src or args.format:
      raise ConfigError("--to-norm writes a converted run: not with --import or --format")
    out = convert_norm(args)
  else:
    out = import_(args) if args.src else export(args)
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
