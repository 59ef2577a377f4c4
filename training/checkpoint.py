"""Orbax checkpoints of the train state, the data iterator state and checksums, in one step directory.

Saves are asynchronous (training continues while files are written) and atomic (orbax writes to
`<step>.orbax-checkpoint-tmp-*` and renames it), so a crash mid-save leaves the previous checkpoint
intact, and old checkpoints are only deleted after a newer one is complete. Every array's checksum
(computed on device, independent of the sharding) and one of the data iterator state's canonical
JSON (`__data__`) are stored beside them. In a multi-process job all processes write cooperatively
and agree on which checkpoint restores.

Every read of a checkpoint goes through `Checkpointer._restore`: train.py's full restore
(`restore`) and the params-only restores of eval.py, export.py and --import (`restore_params`).
It verifies the checksums (a params-only restore, the params' entries) and falls back to the next
older checkpoint with a one-line warning. A checkpoint without its checksum item is unverified and
refused unless `allow_unverified=True` (the entry points' --allow-unverified). A checksum written
before the data iterator's entry existed verifies the arrays only.

Only train.py (a `Checkpointer(..., read_only=False)`) moves a bad checkpoint to
`<workdir>/checkpoints_corrupt/` (never deleted): it is the program that writes the next
checkpoints, and ckpt.keep must not rotate good ones out for a bad one. The read-only entry points
(eval.py, export.py: `read_only=True`) skip a bad checkpoint with the same warning and leave the
workdir exactly as they found it (no move, no checkpoints directory created, no debris of a
running save cleaned up), so a later train.py sees what eval saw and decides itself.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
import zlib
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

  def __init__(self, workdir: Path, every: int, keep: int, async_save: bool = True,
               read_only: bool = False):
    """read_only: eval.py and export.py: restores only, and nothing in the workdir changes."""
    _quiet_abandoned_writes()
    self.dir = Path(workdir).absolute() / "checkpoints"
    self.every = every
    self.read_only = read_only
    self._writing = None            # the step of the save in flight, for error messages
    if read_only:   # nothing created, a running save's tmp kept (orbax's read_only only adds
      options = ocp.CheckpointManagerOptions(create=False, max_to_keep=None,   # warnings)
                                             enable_async_checkpointing=False)
    else:
      options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save,
                                             cleanup_tmp_directories=True)  # killed saves' debris
    try:
      self.mngr = ocp.CheckpointManager(
          self.dir, item_handlers={"state": ocp.StandardCheckpointHandler(),
                                   "data": ocp.JsonCheckpointHandler(),
                                   "checksum": ocp.JsonCheckpointHandler()},
          options=options)
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
    sums[DATA_KEY] = data_checksum(data_state or {})
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

  def check_compatible(self, abstract_state, params_only: bool = False) -> None:
    """ConfigError if the newest readable checkpoint holds arrays of other shapes (another model).
    params_only: `abstract_state` is {"params": ..., "buffers": ...}; only its arrays are
    compared."""
    for s in sorted(self.mngr.all_steps(), reverse=True):
      try:
        meta = self.mngr.item_metadata(s)["state"]
      except Exception:  # noqa: BLE001 — unreadable metadata: corrupt, restore() deals with it
        continue
      if meta is None:
        continue
      want, have = _shapes(abstract_state), _shapes(meta)
      names = set(want) if params_only else set(want) | set(have)
      for k in sorted(names, key=lambda k: (not k.startswith("params"), k)):
        if want.get(k) != have.get(k):
          raise ConfigError(
              f"checkpoint {self.dir / str(s)} was written for another model: {k} is "
              f"{_shape(have.get(k))} there but {_shape(want.get(k))} in this config; use a new "
              "--workdir or the config that wrote it")
      return

  def restore(self, abstract_state, step: int | None = None, allow_unverified: bool = False):
    """Restores onto the shardings in `abstract_state` (any mesh). Returns (step, state, data_state).

    With step=None, the newest checkpoint that loads and matches its checksums; (None, None, None)
    if there is no checkpoint; CheckpointError if there are some but none restores, or if the one
    to restore has no checksums and not allow_unverified.
    """
    return self._restore(abstract_state, step, allow_unverified, params_only=False)

  def restore_params(self, abstract_params, step: int | None = None,
                     allow_unverified: bool = False, abstract_buffers: dict | None = None):
    """Only the parameters and the model's buffers (TrainState.buffers; neither optimizer nor
    data state is read): (step, params, buffers), or (None, None, None) if there is no
    checkpoint. The abstract trees give the shardings and must have the dtypes the run saved (the
    checksums are of the stored bits: cast after restoring)."""
    target = {"params": abstract_params, "buffers": abstract_buffers or {}}
    s, tree, _ = self._restore(target, step, allow_unverified, params_only=True)
    return (s, None, None) if tree is None else (s, tree["params"], tree["buffers"])

  def _restore(self, target, step, allow_unverified: bool, params_only: bool):
    """The one restore: newest first, each read and verified; a bad one is named and skipped
    (by train.py also moved aside). (step, tree, data_state) or (None, None, None)."""
    self.check_compatible(target, params_only)
    candidates = [step] if step is not None else sorted(self.mngr.all_steps(), reverse=True)
    for s in candidates:
      self._check_verifiable(s, allow_unverified)
      try:
        tree, data_state = self._read(s, target, params_only)
        error = None
      except Exception as e:  # noqa: BLE001 — any failure to read or verify: try the previous one
        error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
      if not distributed.any_process(error is not None):
        return s, tree, data_state
      if step is not None:
        raise CheckpointError(f"checkpoint {self.dir / str(s)} could not be restored ({error})")
      self._skip(s, error or "failed on another process")
    if candidates:
      after = " (each left in place)" if self.read_only else \
          f" (moved to {self.dir.parent / 'checkpoints_corrupt'}); to start afresh, rerun with --from-scratch or use a new --workdir"
      raise CheckpointError(f"none of the checkpoints in {self.dir} could be restored{after}")
    return None, None, None

  def _check_verifiable(self, s: int, allow_unverified: bool) -> None:
    """A checkpoint without its checksum item (written before checksums, or damaged) cannot be
    told from a corrupt one: refused unless the user accepts it."""
    if (self.dir / str(s) / "checksum").is_dir():
      return
    if not allow_unverified:
      raise CheckpointError(f"checkpoint {self.dir / str(s)} has no checksums (unverified); pass "
                            "--allow-unverified to restore it anyway")
    log.warning("WARNING: checkpoint %s has no checksums: restoring it unverified "
                "(--allow-unverified)", self.dir / str(s))

  def _read(self, s: int, target, params_only: bool):
    """(tree, data_state) of step s as `target` describes them, verified against its checksums."""
    # One reader for full and params-only restores: the restore args built from `target` carry
    # its shardings, and partial_restore reads only the arrays `target` names.
    with ocp.PyTreeCheckpointer() as ckptr:
      tree = ckptr.restore(self.dir / str(s) / "state", args=ocp.args.PyTreeRestore(
          item=target, partial_restore=True,   # params only; or a run saved before buffers
          restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
    items = {"checksum": ocp.args.JsonRestore()} if (self.dir / str(s) / "checksum").is_dir() else {}
    if not params_only:
      items["data"] = ocp.args.JsonRestore()
    out = self.mngr.restore(s, args=ocp.args.Composite(**items)) if items else {}
    data_state = None if params_only else dict(out["data"] or {})
    if "checksum" in items:
      _verify(tree, data_state, dict(out["checksum"] or {}), params_only)
    return tree, data_state

  def _skip(self, s: int, error: str) -> None:
    if self.read_only:
      log.warning("WARNING: checkpoint %s could not be restored (%s); skipped (left in place), "
                  "trying an older one", self.dir / str(s), error)
      return
    where = self._quarantine(s)
    log.warning("WARNING: checkpoint %s could not be restored (%s); moved to %s, trying an "
                "older one", self.dir / str(s), error, where)

  def _quarantine(self, s: int) -> Path:
    """Moves a bad step directory out of orbax's sight (kept for inspection, never deleted)."""
    dest = self.dir.parent / "checkpoints_corrupt" / f"{s}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
      try:
        dest.parent.mkdir(exist_ok=True)
        (self.dir / str(s)).rename(dest)
      except OSError as e:     # e.g. a read-only copy of a run: skip it, leave it in place
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
  """After a failed write or read (a truncated array file: one per chunk, 38 for a tiny run),
  tensorstore still completes the sibling operations and calls back into the event loop orbax
  already closed: Python prints each as an unraisable RuntimeError. Those tracebacks would bury
  the one clear error or warning; every other unraisable is still reported."""
  prev = sys.unraisablehook
  if getattr(prev, "_seqzoo", False):
    return
  # The same abandoned reads, when their futures are collected, log "Task/Future exception was
  # never retrieved" with tensorstore's whole spec through asyncio's logger: dropped alike.
  logging.getLogger("asyncio").addFilter(
      lambda r: not ("exception was never retrieved" in str(r.msg) and "tensorstore" in
                     r.getMessage()))

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


DATA_KEY = "__data__"     # the data iterator state's entry in a checkpoint's checksum dict


def data_checksum(data_state: dict) -> int:
  """crc32 of the data iterator state's canonical JSON (what JsonSave writes, key order aside)."""
  return zlib.crc32(json.dumps(data_state, sort_keys=True, separators=(",", ":")).encode())


def _verify(tree, data_state: dict | None, stored: dict, params_only: bool) -> None:
  """ValueError naming the first entry whose checksum differs from the stored one. A params-only
  tree is compared with the params' entries; a stored dict without DATA_KEY (saved before it
  existed) verifies the arrays only."""
  if params_only:       # stored names are the TrainState's: .params['embed']['embedding']
    got = {f".{top}{k}": v for top in tree for k, v in checksums(tree[top]).items()}
    names = set(got)
  else:
    got = checksums(tree)
    if DATA_KEY in stored:
      got[DATA_KEY] = data_checksum(data_state)
    names = set(got) | set(stored)
  bad = sorted(k for k in names if got.get(k) != stored.get(k))
  if bad:
    first = "the data iterator state" if bad[0] == DATA_KEY else bad[0]
    raise ValueError(f"checksum mismatch in {len(bad)} items, e.g. {first}")


def _shapes(tree) -> dict[str, tuple]:
  """'params/embed/embedding' -> shape, for a TrainState or orbax's metadata dict of it alike."""
  def name(k):
    return str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))
  return {"/".join(map(name, path)): tuple(v.shape)
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _shape(s) -> str:
  return "absent" if s is None else f"shape {list(s)}"
