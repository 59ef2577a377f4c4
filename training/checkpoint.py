"""Orbax checkpoints of the train state, the data iterator state and checksums, in one step directory.

Saves are asynchronous (training continues while files are written) and atomic (orbax writes to
`<step>.orbax-checkpoint-tmp-*` and renames it), so a crash mid-save leaves the previous checkpoint
intact, and old checkpoints are only deleted after a newer one is complete. Every array's checksum
(computed on device, independent of the sharding) is stored beside it: a checkpoint that fails to load
or whose contents do not match is reported, moved to `<workdir>/checkpoints_corrupt/` (never deleted)
and the next older one is tried. In a multi-process job all processes write cooperatively and agree
on which checkpoint restores.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from configs.base import ConfigError
from training import distributed

log = logging.getLogger("seqzoo")


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or none could be read (disk full, permissions, corruption)."""


class Checkpointer:

  def __init__(self, workdir: Path, every: int, keep: int, async_save: bool = True):
    _quiet_abandoned_writes()
    self.dir = Path(workdir).absolute() / "checkpoints"
    self.every = every
    self._writing = None            # the step of the save in flight, for error messages
    try:
      self.mngr = ocp.CheckpointManager(
          self.dir, item_handlers={"state": ocp.StandardCheckpointHandler(),
                                   "data": ocp.JsonCheckpointHandler(),
                                   "checksum": ocp.JsonCheckpointHandler()},
          options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True))  # killed saves' debris
    except Exception as e:  # noqa: BLE001 — orbax wraps OSErrors
      raise CheckpointError(f"cannot open the checkpoint directory {self.dir}: {e}") from None

  def steps(self) -> list[int]:
    return sorted(self.mngr.all_steps())

  def save(self, step: int, state, data_state: dict | None, force: bool = False) -> bool:
    if not force and step % self.every:
      return False
    if step in self.mngr.all_steps():
      return False
    sums = checksums(state)       # before the next step donates the state's buffers
    try:
      self.mngr.wait_until_finished()     # the previous save's errors surface here, not silently
      self._writing = step
      # An unwritable directory fails here, cleanly: inside orbax it leaves writer threads waiting
      # minutes for a directory that never comes.
      probe = self.dir / f".probe-{jax.process_index()}"
      probe.write_bytes(b"")
      probe.unlink()
      return self.mngr.save(step, force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {}),
          checksum=ocp.args.JsonSave(sums)))
    except Exception as e:  # noqa: BLE001 — orbax and tensorstore wrap OSErrors in many types
      raise self._write_error(e) from None

  def _write_error(self, e: Exception) -> CheckpointError:
    done = [s for s in self.steps() if s != self._writing and (self.dir / str(s)).is_dir()]
    kept = f"the previous checkpoint {self.dir / str(done[-1])} is intact" if done else \
        "no earlier checkpoint exists"
    text = " ".join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
    # tensorstore reports the OS error inside a long message: lead with it
    reason = next((os.strerror(n) for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                            errno.EACCES, errno.EIO) if os.strerror(n) in text),
                  type(e).__name__)
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return CheckpointError(f"could not write checkpoint step {self._writing} to {self.dir}: "
                           f"{reason}; {kept} ({type(e).__name__}: {detail})")

  def check_compatible(self, abstract_state) -> None:
    """ConfigError if the newest readable checkpoint holds arrays of other shapes (another model)."""
    for s in sorted(self.mngr.all_steps(), reverse=True):
      try:
        meta = self.mngr.item_metadata(s)["state"]
      except Exception:  # noqa: BLE001 — unreadable metadata: corrupt, restore() deals with it
        continue
      if meta is None:
        continue
      want, have = _shapes(abstract_state), _shapes(meta)
      for k in sorted(set(want) | set(have), key=lambda k: (not k.startswith("params"), k)):
        if want.get(k) != have.get(k):
          raise ConfigError(
              f"checkpoint {self.dir / str(s)} was written for another model: {k} is "
              f"{_shape(have.get(k))} there but {_shape(want.get(k))} in this config; use a new "
              "--workdir or the config that wrote it")
      return

  def restore(self, abstract_state, step: int | None = None):
    """Restores onto the shardings in `abstract_state` (any mesh). Returns (step, state, data_state).

    With step=None, the newest checkpoint that loads and matches its checksums; (None, None, None)
    if there is no checkpoint; CheckpointError if there are some but none restores.
    """
    self.check_compatible(abstract_state)
    candidates = [step] if step is not None else sorted(self.mngr.all_steps(), reverse=True)
    for s in candidates:
      try:
        has_sum = (self.dir / str(s) / "checksum").is_dir()
        items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
        if has_sum:
          items["checksum"] = ocp.args.JsonRestore()
        out = self.mngr.restore(s, args=ocp.args.Composite(**items))
        if has_sum and (got := checksums(out["state"])) != dict(out["checksum"]):
          bad = sorted(k for k in got if got[k] != out["checksum"].get(k))
          raise ValueError(f"checksum mismatch in {len(bad)} arrays, e.g. {bad[0]}")
        error = None
      except Exception as e:  # noqa: BLE001 — any failure to read means: try the previous one
        error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
      if not distributed.any_process(error is not None):
        return s, out["state"], dict(out["data"] or {})
      if step is not None:
        raise CheckpointError(f"checkpoint {self.dir / str(s)} could not be restored ({error})")
      where = self._quarantine(s)
      log.warning("WARNING: checkpoint %s could not be restored (%s); moved to %s, trying an "
                  "older one", self.dir / str(s), error or "failed on another process", where)
    if candidates:
      raise CheckpointError(f"none of the checkpoints in {self.dir} could be restored (moved to "
                            f"{self.dir.parent / 'checkpoints_corrupt'}); to start afresh, rerun")
    return None, None, None

  def _quarantine(self, s: int) -> Path:
    """Moves a bad step directory out of orbax's sight (kept for inspection, never deleted)."""
    dest = self.dir.parent / "checkpoints_corrupt" / f"{s}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
      try:
        dest.parent.mkdir(exist_ok=True)
        (self.dir / str(s)).rename(dest)
      except OSError as e:     # e.g. eval.py on a read-only copy: skip it, leave it in place
        log.warning("WARNING: could not move %s aside (%s)", self.dir / str(s), e)
        dest = self.dir / str(s)
    distributed.barrier(f"quarantine-{s}")
    self.mngr.reload()
    return dest

  def wait(self):
    try:
      self.mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._write_error(e) from None

  def close(self):
    try:
      self.wait()
    finally:
      try:
        self.mngr.close()
      except Exception:  # noqa: BLE001 — the write error above is the one to report
        pass


def _quiet_abandoned_writes():
  """After a failed write, tensorstore still completes the sibling writes and calls back into the
  save's event loop, already closed: Python prints each as an unraisable RuntimeError. Those
  tracebacks would bury the one clear error; every other unraisable is still reported."""
  prev = sys.unraisablehook
  if getattr(prev, "_seqzoo", False):
    return

  def hook(u):
    if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"):
      prev(u)
  hook._seqzoo = True
  sys.unraisablehook = hook


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what a restore should produce."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


@jax.jit
def _checksums(tree):
  """Per array: sum over elements of (bits + 1) * odd hash of the flat index, mod 2**32.

  Integer sums wrap exactly and in any order, so the value does not depend on the sharding or the
  reduction order; the index hash makes moved or swapped elements count, not only changed ones.
  """
  def one(x):
    uint = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    u = jax.lax.bitcast_convert_type(x, uint)
    i = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
    return jnp.sum((u.astype(jnp.uint32) + 1) * (i * jnp.uint32(0x9E3779B1) | 1), dtype=jnp.uint32)
  return jax.tree.map(one, tree)


def checksums(tree) -> dict[str, int]:
  flat = jax.tree_util.tree_leaves_with_path(jax.device_get(_checksums(tree)))
  return {jax.tree_util.keystr(k): int(v) for k, v in flat}


def _shapes(tree) -> dict[str, tuple]:
  """'params/embed/embedding' -> shape, for a TrainState or orbax's metadata dict of it alike."""
  def name(k):
    return str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))
  return {"/".join(map(name, path)): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _shape(s) -> str:
  return "absent" if s is None else f"shape {list(s)}"
