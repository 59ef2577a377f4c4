"""The data pipeline: a split's tokens (data/sources.py) -> fixed-length examples -> grain batches.

    tok = tokenize.build_tokenizer(cfg.data, workdir)
    it = build_dataset(cfg.data, tok, "train", batch_size=b, seed=cfg.train.seed,
                       process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(it)            # {inputs, targets, segment_ids, positions: int32[b,T], weights: float32[b,T]}
    state = it.get_state()      # a small JSON dict; it.set_state(state) on a fresh iterator resumes exactly

Examples (T = data.seq_len), the same pytree in both modes:
  pack=False  the split's documents concatenated into one token stream, cut into windows of T+1 tokens at
              stride T; inputs = w[:-1], targets = w[1:]; segment_ids all 1, positions arange(T).
  pack=True   each document is cut into the same windows (T+1 tokens at stride T, the last one shorter);
              a window of L+1 tokens gives L (input, next-token) pairs, and windows are packed into rows of T
              by best-fit decreasing (Ding et al. 2024, "Fewer Truncations Improve Language Modeling").
              segment_ids number the windows of a row 1, 2, 3, ... (0 = padding), positions restart at 0 in
              each. Every target is the next token of its own document, so no target crosses a document
              boundary; padding has weight 0.
train: an endless stream of epochs, each a fresh seeded permutation of the examples; or, with
  data.sampling=random (nanoGPT's get_batch), windows at i.i.d. uniformly random token offsets, seeded by
  position in the stream; val: in order, once (always the stride-T windows).
The pipeline is a grain MapDataset of batches (random access by batch index), so the iterator state is one
integer, the number of batches already returned, and each process computes only its own batches.

Task sources (data.source=mqar, ..., data/tasks.py; `tok` is None): batch k is examples [k*b, (k+1)*b) of
tasks.TaskExamples, example i a pure function of (task, seed, split, i), so every batch is fresh and the
same state resumes the same batches. train: seed = train.seed, endless; val: seed = the `seed` given (0 from
training/evaluate.py: the same val draws for every run), at data.eval_seq_len if set, as many batches as
asked for. The batch has the keys above only (linear_regression: inputs float32 [b, T, d+1], targets float32).
"""
from __future__ import annotations

import bisect
import sys

import grain
import numpy as np

from configs.schema import ConfigError, DataConfig
from data import sources, tasks

# One background thread computes upcoming batches while the train step runs (numpy and XLA release the
# GIL); grain's index-based prefetch keeps get_state() exact: it counts batches *returned*, not computed.
PREFETCH_THREADS = 1
PREFETCH_BATCHES = 8


# ---------------------------------------------------------------------------------------------
# Tokens -> examples, gathered a whole batch at a time (vectorised: grain's per-element bookkeeping
# costs ~60us, so the grain element is a batch, not a sequence).

class Windows:
  """Example i = the stream's tokens [i*stride, i*stride + T + 1): every window of T+1 tokens that starts at
  a multiple of `stride` (stride T: consecutive windows share one token, each target is seen once)."""

  def __init__(self, tokens: np.ndarray, seq_len: int, stride: int):
    self.tokens, self.T, self.stride = tokens, seq_len, stride
    self._n = max(0, (len(tokens) - 1 - seq_len) // stride + 1)

  def __len__(self) -> int:
    return self._n

  def gather(self, idx_b: np.ndarray) -> dict:
    b, T = len(idx_b), self.T
    w_bT1 = np.asarray(self.tokens[idx_b[:, None] * self.stride + np.arange(T + 1)], np.int32)
    return {"inputs": np.ascontiguousarray(w_bT1[:, :-1]), "targets": np.ascontiguousarray(w_bT1[:, 1:]),
            "weights": np.ones((b, T), np.float32),
            "segment_ids": np.ones((b, T), np.int32),
            "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (b, T)).copy()}


class Packed:
  """Documents cut into windows of <= T+1 tokens, packed into rows of T (see the module docstring)."""

  def __init__(self, tokens: np.ndarray, bounds: np.ndarray, seq_len: int):
    T = self.T = seq_len
    self.tokens = tokens
    n_tok = np.diff(bounds)
    n_win = np.where(n_tok >= 2, (n_tok - 2) // T + 1, 0)        # ceil((n - 1) / T) windows per doc
    doc = np.repeat(np.arange(len(n_tok)), n_win)
    k = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    start = bounds[:-1][doc] + k * T
    length = np.minimum(T, bounds[1:][doc] - 1 - start)           # input/target pairs in the window
    full = np.flatnonzero(length == T)                            # a full window is a row by itself
    part = np.flatnonzero(length < T)
    packed = pack_best_fit(length[part].tolist(), T)
    order = np.concatenate([full, part[np.array([j for r in packed for j in r], np.int64)]])
    row_len = np.concatenate([np.ones(len(full), np.int64), [len(r) for r in packed]]).astype(np.int64)
    self.start, self.length = start[order], length[order]
    self.row_ptr = np.concatenate([[0], np.cumsum(row_len)])

  def __len__(self) -> int:
    return len(self.row_ptr) - 1

  def gather(self, idx_b: np.ndarray) -> dict:
    b, T = len(idx_b), self.T
    out = {k: np.zeros((b, T), np.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
    out["weights"] = np.zeros((b, T), np.float32)
    for row, r in enumerate(idx_b.tolist()):
      o = 0
      for seg, p in enumerate(range(self.row_ptr[r], self.row_ptr[r + 1]), start=1):
        s, n = int(self.start[p]), int(self.length[p])
        w = np.asarray(self.tokens[s: s + n + 1], np.int32)
        out["inputs"][row, o:o + n], out["targets"][row, o:o + n] = w[:-1], w[1:]
        out["segment_ids"][row, o:o + n] = seg
        out["positions"][row, o:o + n] = np.arange(n)
        out["weights"][row, o:o + n] = 1.0
        o += n
    return out


def pack_best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
  """Best-fit decreasing bin packing: indices of `lengths` per row, longest first; deterministic."""
  order = sorted(range(len(lengths)), key=lambda i: -lengths[i])   # stable: ties keep document order
  rows: list[list[int]] = []
  free: list[tuple[int, int]] = []      # sorted (space left, row id) of rows not yet full
  for i in order:
    n = lengths[i]
    j = bisect.bisect_left(free, (n, -1))    # the fullest row that still fits n
    if j == len(free):
      rows.append([i])
      row, left = len(rows) - 1, capacity - n
    else:
      left, row = free.pop(j)
      rows[row].append(i)
      left -= n
    if left > 0:
      bisect.insort(free, (left, row))
  return rows


class Batches:
  """Random access to batches: batch k = the examples at stream positions [k*b, (k+1)*b).

  train (seed given): the stream is endless blocks, block e drawn from a numpy Generator seeded with
  (seed, e): a permutation of the examples (an epoch), or with iid=True `IID_BLOCK` examples drawn
  uniformly with replacement (nanoGPT's sampling); a batch may straddle two blocks. val (seed None): in order.
  """
  IID_BLOCK = 1 << 16

  def __init__(self, examples, batch_size: int, n_batches: int, seed: int | None, iid: bool = False):
    self.examples, self.b, self.n_batches, self.seed, self.iid = examples, batch_size, n_batches, seed, iid
    self.block = min(len(examples), self.IID_BLOCK) if iid else len(examples)
    self._cache: tuple = ()     # ((block, examples), ...), replaced whole: a racing thread only recomputes

  def __len__(self) -> int:
    return self.n_batches

  def _draw(self, e: int) -> np.ndarray:
    for cached, idx in self._cache:
      if cached == e:
        return idx
    rng, n = np.random.default_rng([self.seed, e]), len(self.examples)
    idx = rng.integers(0, n, self.block) if self.iid else rng.permutation(n)
    self._cache = (self._cache + ((e, idx),))[-2:]    # a batch touches at most two blocks
    return idx

  def __getitem__(self, k: int) -> dict:
    block_i, idx_i = np.divmod(np.arange(k * self.b, (k + 1) * self.b, dtype=np.int64), self.block)
    if self.seed is not None:
      idx_i = np.concatenate([self._draw(int(e))[idx_i[block_i == e]] for e in np.unique(block_i)])
    return self.examples.gather(idx_i)


# ---------------------------------------------------------------------------------------------
# The public pipeline.

def build_dataset(cfg: DataConfig, tok, split: str, *, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1):
  """A grain DatasetIterator of batches (dicts of numpy [batch_size, T]) for this process.

  train: shuffled by `seed`, reshuffled every epoch, endless. val: in order, one pass, only whole global
  batches. The global batch (batch_size * process_count rows) is the concatenation of the processes'
  batches in process order, and equals the batch a single process with the global batch size would see.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
  if not 0 <= seed < 2**32:
    raise ConfigError(f"seed={seed} must be in [0, 2**32)")
  if cfg.seq_len < 1:
    raise ConfigError(f"data.seq_len={cfg.seq_len} must be > 0")
  if cfg.task:
    return _task_dataset(cfg, split, batch_size, seed, process_index, process_count)
  sp = sources.token_split(cfg, tok, split)
  iid = split == "train" and cfg.sampling == "random"
  if cfg.pack and iid:
    raise ConfigError(f"data.sampling={cfg.sampling!r} needs data.pack=false (packed rows hold "
                      "whole windows of documents)")
  examples = (Packed(sp.tokens, sp.bounds, cfg.seq_len) if cfg.pack
              else Windows(sp.tokens, cfg.seq_len, stride=1 if iid else cfg.seq_len))
  n, global_batch = len(examples), batch_size * process_count
  where = f"the {split} split of data.source={cfg.source!r} (data.path={cfg.path!r})"
  if split == "train":
    if n == 0:
      raise ConfigError(f"{where} has {len(sp.tokens)} tokens: not one sequence of "
                        f"data.seq_len+1={cfg.seq_len + 1}")
    batches = Batches(examples, batch_size, sys.maxsize // global_batch * process_count, seed, iid)
  else:
    if n < global_batch:
      raise ConfigError(f"{where} has {n} sequences of data.seq_len={cfg.seq_len}, fewer than one "
                        f"global batch of {global_batch}")
    batches = Batches(examples, batch_size, n // global_batch * process_count, None)
  # Per-process batch j of global batch k is batch k*P + j: every process reads only its own rows.
  ds = grain.MapDataset.source(batches)[process_index::process_count]
  return _iterate(ds, cfg)


def _iterate(ds, cfg: DataConfig):
  """A grain iterator over a MapDataset of batches: in-process prefetch, or data.num_workers processes."""
  if cfg.num_workers > 0:
    # Spawned worker processes (the launching script needs an `if __name__ == "__main__":` guard). For
    # this in-memory pipeline they are slower than the in-process thread; kept for costly transforms.
    from absl import flags   # grain's worker processes read absl flags; outside absl.app nobody parsed them
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    opts = grain.MultiprocessingOptions(num_workers=cfg.num_workers)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0)).mp_prefetch(opts))
  read = grain.ReadOptions(num_threads=PREFETCH_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)
  return iter(ds.to_iter_dataset(read))


class _TaskBatch:
  """A task's examples, only the model's batch keys (a regression example also carries its draws)."""

  def __init__(self, examples: tasks.TaskExamples):
    self.examples = examples

  def __len__(self) -> int:
    return len(self.examples)

  def gather(self, idx_b: np.ndarray) -> dict:
    return {k: v for k, v in self.examples.gather(idx_b).items() if k in tasks.TOKEN_KEYS}


def _task_dataset(cfg: DataConfig, split: str, batch_size: int, seed: int, process_index: int,
                  process_count: int):
  examples = _TaskBatch(tasks.TaskExamples(sources.task(cfg, split), seed, split))
  batches = Batches(examples, batch_size, sys.maxsize // (batch_size * process_count) * process_count, None)
  return _iterate(grain.MapDataset.source(batches)[process_index::process_count], cfg)


if __name__ == "__main__":
  # Loader throughput, to compare with a train step: python -m data.pipeline [seq_len] [batch] [pack]
  import time
  from data import tokenize
  T, b = (int(a) for a in (sys.argv[1:3] or (256, 32)))
  cfg = DataConfig(seq_len=T, pack=len(sys.argv) > 3 and sys.argv[3] == "pack")
  t0 = time.perf_counter()
  it = build_dataset(cfg, tokenize.build_tokenizer(cfg, None), "train", batch_size=b, seed=0)
  next(it)
  t1, n = time.perf_counter(), 2000
  for _ in range(n):
    next(it)
  t2 = time.perf_counter()
  print(f"stdlib+{cfg.tokenizer} T={T} b={b} pack={cfg.pack}: setup {t1 - t0:.2f}s, "
        f"{n / (t2 - t1):.0f} batches/s ({n * b * T / (t2 - t1) / 1e6:.2f} M tokens/s)")
