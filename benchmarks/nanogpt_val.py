"""Validation loss of a nanoGPT checkpoint on the windows seqzoo's eval uses, for a like-for-like loss.

    python benchmarks/nanogpt_val.py --nanogpt /path/to/nanoGPT --ckpt out/ckpt.pt [--batches 20]

Run it with a Python that has torch. nanoGPT estimates val loss on random windows; seqzoo's eval
(`python eval.py --workdir DIR --batches N`) reads the validation split in order, T+1 characters at
stride T, 12 windows per batch. This script scores nanoGPT's model on exactly those windows of its
own val.bin (the same characters and, for tinyshakespeare, the same sorted character vocabulary: both
split the text at int(0.9 * len)), as nanoGPT's data/shakespeare_char/prepare.py writes it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--nanogpt", type=Path, required=True)
  p.add_argument("--ckpt", type=Path, required=True)
  p.add_argument("--batches", type=int, default=20)
  p.add_argument("--batch-size", type=int, default=12)
  args = p.parse_args()
  sys.path.insert(0, str(args.nanogpt))
  from model import GPT, GPTConfig   # nanoGPT's model.py

  ck = torch.load(args.ckpt, map_location="cpu")
  model = GPT(GPTConfig(**ck["model_args"]))
  model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()})
  model.eval()
  T = ck["model_args"]["block_size"]
  val = np.memmap(args.nanogpt / "data/shakespeare_char/val.bin", dtype=np.uint16, mode="r")
  n = min(args.batches * args.batch_size, (len(val) - 1) // T)
  losses = []
  with torch.no_grad():
    for i in range(0, n, args.batch_size):
      w = np.stack([val[j * T:j * T + T + 1] for j in range(i, min(i + args.batch_size, n))])
      w = torch.from_numpy(w.astype(np.int64))
      _, loss = model(w[:, :-1].contiguous(), w[:, 1:].contiguous())
      losses.append((loss.item(), len(w)))
  nll = sum(l * k for l, k in losses) / sum(k for _, k in losses)
  print(json.dumps({"iter": ck.get("iter_num"), "windows": n, "val_loss": round(nll, 4),
                    "ppl": round(math.exp(nll), 4)}))


if __name__ == "__main__":
  main()
