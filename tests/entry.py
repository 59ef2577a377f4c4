"""Runs an entry script (train.py, eval.py, export.py) the way `python <script> ARGS` does, but in
this process: through its `__main__` block, with its exit codes (training/cli.py), and without a new
process's JAX import. No test imports an entry script; what tests call directly lives in packages.
"""
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, argv) -> int:
  """The exit code of `python <script> *argv`, run in-process."""
  saved = sys.argv
  sys.argv = [str(ROOT / script), *map(str, argv)]
  try:
    runpy.run_path(str(ROOT / script), run_name="__main__")
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv = saved
  return 0


def train(argv) -> int:
  return run("train.py", argv)


def eval_(argv) -> int:
  return run("eval.py", argv)


def export(argv) -> int:
  return run("export.py", argv)
