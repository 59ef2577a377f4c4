"""What the three entry points (train.py, eval.py, export.py) share as command-line programs: the
one mapping from errors to exit codes, and logging.

    0  done (train.py: also preempted with the state saved; --aot: the program fits)
    1  CheckpointError: a checkpoint could not be written, or none could be read (the environment:
       disk, permissions, corruption; not the code)
    2  ConfigError: a user error (config, flags, data, workdir), reported in one line
    3  Stopped: too many non-finite updates in a row (train.py; the last good state is saved)
    4  DoesNotFit: --aot: the program needs more memory per device than the topology's chips have
  130  Ctrl-C (KeyboardInterrupt; train.py: after saving the current step, or at once on a second)
"""
from __future__ import annotations

import logging
import signal
import sys

from configs.base import ConfigError
from training.checkpoint import CheckpointError

log = logging.getLogger("seqzoo")


class Stopped(RuntimeError):
  """Too many non-finite updates in a row: the last good state was saved."""


class DoesNotFit(RuntimeError):
  """--aot: the compiled program does not fit in the topology's memory (the report says why)."""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C, with what was saved. A KeyboardInterrupt, so no `except Exception` on the way up
  mistakes it for a failure to handle (e.g. a checkpoint that did not restore)."""


class Preempted(BaseException):
  """SIGTERM before training started: nothing to save (exit 0, as after a preemption's save)."""


# (error, exit code, how stderr's one line starts); no traceback for any of them. A Ctrl-C
# anywhere ends as one line and 130, the code a shell gives a program Ctrl-C ended.
EXIT_CODES = ((ConfigError, 2, "error"), (CheckpointError, 1, "error"), (Stopped, 3, "stopped"),
              (DoesNotFit, 4, "does not fit"), (Preempted, 0, "preempted"),
              (KeyboardInterrupt, 130, "interrupted (Ctrl-C)"))


def run(main, argv=None) -> int:
  """main(argv)'s exit code, or the code of the error it raised (EXIT_CODES), said on stderr.
  The signal handlers main installs are undone: in-process callers (tests) keep their own."""
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    return main(argv)
  except tuple(e for e, _, _ in EXIT_CODES) as e:
    code, what = next((c, w) for cls, c, w in EXIT_CODES if isinstance(e, cls))
    print(f"{what}: {str(e) or 'aborted'}", file=sys.stderr)
    return code
  finally:
    for s, h in handlers.items():
      if h is not None:        # None: installed outside Python, cannot be put back from here
        signal.signal(s, h)


def add_allow_unverified(parser, verb: str) -> None:
  """The one flag that lets a command read a checkpoint without checksums (training/checkpoint.py)."""
  parser.add_argument("--allow-unverified", action="store_true",
                      help=f"{verb} a checkpoint that has no checksums (written before they existed, "
                           "or its checksum item lost); refused without it")


def setup_logging(stream=None):
  """INFO lines of our own on stdout (stderr where stdout is the command's JSON report), only
  warnings from the libraries."""
  logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=stream or sys.stdout,
                      force=True)
  log.setLevel(logging.INFO)
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
