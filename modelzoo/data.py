"""The data pipeline: documents -> tokens (once, numpy) -> fixed-length examples -> grain batches.

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
"""
from __future__ import annotations

import bisect
import functools
import glob
import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple

import grain
import numpy as np

from configs.base import ConfigError, DataConfig

SOURCES = ("stdlib", "text", "tokens", "arrayrecord")
# One background thread computes upcoming batches while the train step runs (numpy and XLA release the
# GIL); grain's index-based prefetch keeps get_state() exact: it counts batches *returned*, not computed.
PREFETCH_THREADS = 1
PREFETCH_BATCHES = 8


# ---------------------------------------------------------------------------------------------
# Sources -> documents (text) per split.

def documents(cfg: DataConfig, split: str) -> list[str]:
  """The split's text documents (stdlib, text, arrayrecord sources), in a deterministic order."""
  _check(cfg, split)
  if cfg.source == "tokens":
    raise ConfigError(f"data.source='tokens' ({cfg.path!r}) holds token ids, not text")
  return list(_documents(cfg.source, cfg.path, cfg.val_fraction, split))


@functools.lru_cache(maxsize=8)
def _documents(source: str, path: str, val_fraction: float, split: str) -> tuple[str, ...]:
  if source == "stdlib":
    return _stdlib_documents(val_fraction, split)
  if source == "text":
    docs = []
    for f in _expand(path, source):
      text = _read_utf8(f)
      cut = _cut(len(text), val_fraction)    # like nanoGPT: the last val_fraction of each file's characters
      docs.append(text[:cut] if split == "train" else text[cut:])
    return tuple(docs)
  return _arrayrecord_documents(path, val_fraction, split)


def _cut(n: int, val_fraction: float) -> int:
  return int(n * (1.0 - val_fraction))     # int(n * 0.9) for the default, nanoGPT's exact split point


def stdlib_files(val_fraction: float, split: str) -> list[Path]:
  """The running interpreter's standard-library .py files (sorted), split by a stable hash of the path."""
  root = Path(sysconfig.get_paths()["stdlib"])
  rels = []
  for dirpath, dirnames, filenames in os.walk(root):   # os.walk does not follow symlinks: a fixed set
    dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
    rels += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames if f.endswith(".py")]
  out = []
  for rel in sorted(rels):
    digest = hashlib.sha256(rel.encode("utf-8")).digest()
    if (int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction) == (split == "val"):
      out.append(root / rel)
  return out


def _stdlib_documents(val_fraction: float, split: str) -> tuple[str, ...]:
  docs = []
  for f in stdlib_files(val_fraction, split):
    try:
      docs.append(f.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError):
      pass   # a few test files are deliberately latin-1 / invalid UTF-8: not user data, skip them
  docs = [d for d in docs if d]
  if not docs:
    raise ConfigError(f"data.source='stdlib': no {split} .py files in {sysconfig.get_paths()['stdlib']!r}")
  return tuple(docs)


def _expand(spec: str, source: str) -> list[Path]:
  """data.path: comma-separated files or globs, each of which must match something."""
  items = [s.strip() for s in spec.split(",") if s.strip()]
  if not items:
    raise ConfigError(f"data.path is empty but data.source={source!r} needs files")
  out = []
  for item in items:
    if any(c in item for c in "*?["):
      files = [Path(m) for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
      if not files:
        raise ConfigError(f"data.path: {item!r} matches no file")
      out += files
    elif Path(item).is_file():
      out.append(Path(item))
    else:
      raise ConfigError(f"data.path: {item!r} does not exist or is not a file")
  return out


def _read_utf8(path: Path) -> str:
  raw = path.read_bytes()
  if not raw:
    raise ConfigError(f"data file {str(path)!r} is empty")
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ConfigError(f"data file {str(path)!r} is not UTF-8 text: byte 0x{raw[e.start]:02x} at byte "
                      f"offset {e.start} ({e.reason})") from None


def _arrayrecord_documents(path: str, val_fraction: float, split: str) -> tuple[str, ...]:
  """Every record is one UTF-8 document; val = the last val_fraction of all records, in file order."""
  docs = []
  for f in _expand(path, "arrayrecord"):
    try:
      src = grain.sources.ArrayRecordDataSource([str(f)])
      records = [src[i] for i in range(len(src))]
    except Exception as e:   # array_record raises bare RuntimeErrors for non-ArrayRecord files
      raise ConfigError(f"data file {str(f)!r} is not a readable ArrayRecord file: {e}") from None
    if not records:
      raise ConfigError(f"data file {str(f)!r} holds no records")
    for i, rec in enumerate(records):
      try:
        docs.append(bytes(rec).decode("utf-8"))
      except UnicodeDecodeError as e:
        raise ConfigError(f"data file {str(f)!r}: record {i} is not UTF-8 text (byte offset {e.start} "
                          f"of the record)") from None
  cut = _cut(len(docs), val_fraction)
  if not 0 < cut < len(docs):
    raise ConfigError(f"data.path={path!r}: {len(docs)} records cannot be split into train and val "
                      f"with data.val_fraction={val_fraction}")
  return tuple(docs[:cut] if split == "train" else docs[cut:])


# ---------------------------------------------------------------------------------------------
# Documents -> one token array per split, with document boundaries.

class _Split(NamedTuple):
  tokens: np.ndarray      # [N] uint16 (or int32 for vocabularies above 65536); may be a memmap view
  bounds: np.ndarray      # [n_docs + 1] int64 offsets of the documents in `tokens`


def _token_split(cfg: DataConfig, tok, split: str) -> _Split:
  _check(cfg, split)
  return _token_split_cached(cfg.source, cfg.path, cfg.val_fraction, split, tok)


@functools.lru_cache(maxsize=4)   # train.py, eval and bytes_per_token ask for the same split
def _token_split_cached(source, path, val_fraction, split, tok) -> _Split:
  if source == "tokens":
    return _bin_split(path, val_fraction, split, tok)
  ids = tok.encode_batch(list(_documents(source, path, val_fraction, split)))
  bounds = np.concatenate([[0], np.cumsum([len(x) for x in ids], dtype=np.int64)])
  dtype = np.uint16 if tok.vocab_size <= 2**16 else np.int32   # halves the memory of a 30M-token stream
  return _Split(np.concatenate(ids).astype(dtype), bounds)


def _bin_split(path: str, val_fraction: float, split: str, tok) -> _Split:
  """nanoGPT .bin files: flat uint16 token ids, memory-mapped (never read whole into memory)."""
  p = Path(path.strip())
  if p.is_dir():
    f = p / f"{split}.bin"
    if not ((p / "train.bin").is_file() and (p / "val.bin").is_file()):
      raise ConfigError(f"data.path={path!r} is a directory without train.bin and val.bin")
    parts = [(f, _memmap_bin(f)[:])]
  else:
    parts = []
    for f in _expand(path, "tokens"):
      arr = _memmap_bin(f)
      cut = _cut(len(arr), val_fraction)
      parts.append((f, arr[:cut] if split == "train" else arr[cut:]))
  for f, arr in parts:
    top = int(arr.max()) if len(arr) else 0
    if top >= tok.vocab_size:
      raise ConfigError(f"data file {str(f)!r} holds token id {top} but the {tok.name!r} tokenizer has "
                        f"{tok.vocab_size} ids; set data.tokenizer / data.tokenizer_path to match the file")
  bounds = np.concatenate([[0], np.cumsum([len(a) for a in parts], dtype=np.int64)])
  tokens = parts[0][1] if len(parts) == 1 else np.concatenate([a for _, a in parts])
  return _Split(tokens, bounds)


def _memmap_bin(f: Path) -> np.ndarray:
  size = f.stat().st_size
  if size == 0:
    raise ConfigError(f"data file {str(f)!r} is empty")
  if size % 2:
    raise ConfigError(f"data file {str(f)!r} has an odd size ({size} bytes): not a flat uint16 .bin")
  return np.memmap(f, dtype=np.uint16, mode="r")


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
  sp = _token_split(cfg, tok, split)
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


def bytes_per_token(cfg: DataConfig, tok, split: str) -> float:
  """UTF-8 bytes of the split's text per token, for bits per byte = loss_nats / ln 2 / bytes_per_token.

  byte: 1; char: bytes per character (a char token is one character); bpe: the compression ratio.
  """
  sp = _token_split(cfg, tok, split)
  if cfg.source == "tokens":
    n_bytes = len(tok.decode(sp.tokens).encode("utf-8"))
  else:
    n_bytes = sum(len(d.encode("utf-8")) for d in _documents(cfg.source, cfg.path, cfg.val_fraction, split))
  return n_bytes / max(1, len(sp.tokens))


def _check(cfg: DataConfig, split: str) -> None:
  if split not in ("train", "val"):
    raise ValueError(f"split={split!r} must be 'train' or 'val'")
  if cfg.source not in SOURCES:
    raise ConfigError(f"data.source={cfg.source!r} is not one of {SOURCES}")


if __name__ == "__main__":
  # Loader throughput, to compare with a train step: python -m modelzoo.data [seq_len] [batch] [pack]
  import time
  from modelzoo import tokenize
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
