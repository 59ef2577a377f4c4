"""The kernel benchmark table: every kernel's CPU rows, measured in this one run.

    python benchmarks/kernels.py [--only attention,delta_rule,ssm] [--markdown]

Ratios compare implementations timed (or compiled, for memory) in the same process, so machine load
affects both sides; read the ratios, not the milliseconds. No TPU/GPU speed is measured or claimed here.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUITES = {"attention": "bench_attention", "delta_rule": "bench_delta_rule", "ssm": "bench_ssm"}
COLUMNS = ("kernel", "case", "impl", "baseline", "ratio")


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--only", default=",".join(SUITES))
  p.add_argument("--markdown", action="store_true")
  args = p.parse_args()
  rows = []
  for name in args.only.split(","):
    rows += importlib.import_module(SUITES[name]).rows()
  extra = sorted({k for r in rows for k in r} - set(COLUMNS) - {"note"})
  cols = list(COLUMNS) + extra
  if args.markdown:
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
      print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
  else:
    for r in rows:
      print("  ".join(f"{c}={r[c]}" for c in cols if c in r))
  for note in sorted({r["note"] for r in rows if "note" in r}):
    print(f"note: {note}")


if __name__ == "__main__":
  main()
