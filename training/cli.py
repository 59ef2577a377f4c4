"""What the three entry points (train.py, eval.py, export.py) share as command-line programs: the
one mapping from errors to exit codes, and logging.

    0  done (train.py: also preempted with the state saved; --aot: the program fits)
    1  CheckpointError: a checkpoint could not be written, or none could be read (the environment:
       disk, permissions, corruption; not the code)
    2  ConfigError: a user error (config, flags, data, workdir), reported in one line
    3  Stopped: too many non-finite updates in a row (train.py; the last good state is saved)
    4  DoesNotFit: --aot: the program needs more memory per device than the topology's chips have
"""
from __future__ import annotations

import logging
import sys

from configs.base import ConfigError
from training.checkpoint import CheckpointError

log = logging.getLogger("seqzoo")


class Stopped(RuntimeError):
  """Too many non-finite updates in a row: the last good state was saved."""


class DoesNotFit(RuntimeError):
  """--aot: the compiled program does not fit in the topology's memory (the report says why)."""


# (error, exit code, how stderr's one line starts); no traceback for any of them.
EXIT_CODES = ((ConfigError, 2, "error"), (CheckpointError, 1, "error"), (Stopped, 3, "stopped"),
              (DoesNotFit, 4, "does not fit"))


def run(main, argv=None) -> int:
  """main(argv)'s exit code, or the code of the error it raised (EXIT_CODES), said on stderr."""
  try:
    return main(argv)
  except tuple(e for e, _, _ in EXIT_CODES) as e:
    code, what = next((c, w) for cls, c, w in EXIT_CODES if isinstance(e, cls))
    print(f"{what}: {e}", file=sys.stderr)
    return code


def setup_logging():
  """INFO lines of our own on stdout, only warnings from the libraries."""
  logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout, force=True)
  log.setLevel(logging.INFO)
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
