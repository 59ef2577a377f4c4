"""Orbax checkpoints of the train state and the data iterator state, in one step directory.

Saves are asynchronous (training continues while files are written) and atomic (orbax writes to a
temporary directory and renames it), so a crash mid-save leaves the previous checkpoint intact. On
restore, a checkpoint that fails to load is reported and the next older one is tried.
"""
from __future__ import annotations

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("seqzoo")


class Checkpointer:

  def __init__(self, workdir: Path, every: int, keep: int, async_save: bool = True):
    self.dir = Path(workdir).absolute() / "checkpoints"
    self.every = every
    self.mngr = ocp.CheckpointManager(
        self.dir, item_names=("state", "data"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def steps(self) -> list[int]:
    return sorted(self.mngr.all_steps())

  def save(self, step: int, state, data_state: dict | None, force: bool = False) -> bool:
    if not force and step % self.every:
      return False
    if step in self.mngr.all_steps():
      return False
    items = {"state": ocp.args.StandardSave(state)}
    items["data"] = ocp.args.JsonSave(data_state or {})
    return self.mngr.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state, step: int | None = None):
    """Restores onto the shardings in `abstract_state` (any mesh). Returns (step, state, data_state).

    With step=None, the newest checkpoint that loads; returns (None, None, None) if there is none.
    """
    candidates = [step] if step is not None else sorted(self.mngr.all_steps(), reverse=True)
    for s in candidates:
      try:
        out = self.mngr.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return s, out["state"], dict(out["data"] or {})
      except Exception as e:  # noqa: BLE001 — any failure to read means: try the previous one
        if step is not None:
          raise
        log.warning("checkpoint %s could not be restored (%s: %s); trying an older one",
                    self.dir / str(s), type(e).__name__, str(e).splitlines()[0][:200])
    return None, None, None

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what a restore should produce."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
