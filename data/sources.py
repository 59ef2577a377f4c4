"""Sources -> the text documents of each split -> one token array per split.

    docs = documents(cfg.data, "train")            # stdlib / text / arrayrecord: list of str
    sp = token_split(cfg.data, tok, "val")          # Split(tokens [N], bounds [n_docs + 1])
    bytes_per_token(cfg.data, tok, "val")           # for bits per byte

Sources (data.source): `stdlib` (the running interpreter's standard-library .py files, split by a
stable hash of the path), `text` (data.path files or globs; the last data.val_fraction of each
file's characters is validation, as nanoGPT), `tokens` (nanoGPT uint16 .bin files, memory-mapped),
`arrayrecord` (grain ArrayRecord files, one UTF-8 document per record). Tokenizing a split is done
once per process and cached: train.py, its evaluation and bytes_per_token share it.

Task sources (mqar, selective_copy, induction, phonebook, linear_regression) have no documents:
`task(cfg.data, split)` is the data/tasks.py task their examples come from (data/pipeline.py).
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
import re
import sysconfig
from pathlib import Path
from typing import NamedTuple

import grain
import numpy as np

from configs.schema import TASK_SOURCES, ConfigError, DataConfig
from data import tasks

SOURCES = ("stdlib", "text", "tokens", "arrayrecord") + TASK_SOURCES


# ---------------------------------------------------------------------------------------------
# Sources -> documents (text) per split.

def documents(cfg: DataConfig, split: str) -> list[str]:
  """The split's text documents (stdlib, text, arrayrecord sources), in a deterministic order."""
  check(cfg, split)
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

class Split(NamedTuple):
  tokens: np.ndarray      # [N] uint16 (or int32 for vocabularies above 65536); may be a memmap view
  bounds: np.ndarray      # [n_docs + 1] int64 offsets of the documents in `tokens`


def token_split(cfg: DataConfig, tok, split: str) -> Split:
  check(cfg, split)
  return _token_split_cached(cfg.source, cfg.path, cfg.val_fraction, split, tok)


@functools.lru_cache(maxsize=4)   # train.py, eval and bytes_per_token ask for the same split
def _token_split_cached(source, path, val_fraction, split, tok) -> Split:
  if source == "tokens":
    return _bin_split(path, val_fraction, split, tok)
  ids = tok.encode_batch(list(_documents(source, path, val_fraction, split)))
  bounds = np.concatenate([[0], np.cumsum([len(x) for x in ids], dtype=np.int64)])
  dtype = np.uint16 if tok.vocab_size <= 2**16 else np.int32   # halves the memory of a 30M-token stream
  return Split(np.concatenate(ids).astype(dtype), bounds)


def _bin_split(path: str, val_fraction: float, split: str, tok) -> Split:
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
  return Split(tokens, bounds)


def _memmap_bin(f: Path) -> np.ndarray:
  size = f.stat().st_size
  if size == 0:
    raise ConfigError(f"data file {str(f)!r} is empty")
  if size % 2:
    raise ConfigError(f"data file {str(f)!r} has an odd size ({size} bytes): not a flat uint16 .bin")
  return np.memmap(f, dtype=np.uint16, mode="r")



def bytes_per_token(cfg: DataConfig, tok, split: str) -> float:
  """UTF-8 bytes of the split's text per token, for bits per byte = loss_nats / ln 2 / bytes_per_token.

  byte: 1; char: bytes per character (a char token is one character); bpe: the compression ratio.
  """
  sp = token_split(cfg, tok, split)
  if cfg.source == "tokens":
    n_bytes = len(tok.decode(sp.tokens).encode("utf-8"))
  else:
    n_bytes = sum(len(d.encode("utf-8"))
                  for d in _documents(cfg.source, cfg.path, cfg.val_fraction, split))
  return n_bytes / max(1, len(sp.tokens))


def check(cfg: DataConfig, split: str) -> None:
  if split not in ("train", "val"):
    raise ValueError(f"split={split!r} must be 'train' or 'val'")
  if cfg.source not in SOURCES:
    raise ConfigError(f"data.source={cfg.source!r} is not one of {SOURCES}")
  if cfg.task:
    raise ConfigError(f"data.source={cfg.source!r} is a procedural task: no documents or tokens "
                      "(data/pipeline.py draws its examples through sources.task)")


# ---------------------------------------------------------------------------------------------
# Task sources: the data/tasks.py task a DataConfig describes.

# The DataConfig fields that are task knobs (data.seq_len aside, handled in task()).
KNOBS = ("vocab_size", "num_pairs", "num_queries", "power_a", "num_tokens", "num_entries",
         "name_len", "number_len", "d", "n", "sigma", "layout", "ridge_lambda", "eta")


def task(cfg: DataConfig, split: str = "train"):
  """The task of a task source, its knobs from `cfg` (a field left at its DataConfig default gives
  the task's own default); the val split at data.eval_seq_len if set. ConfigError naming the
  `data.<knob>` for a bad value or a knob the task does not have."""
  if cfg.source not in TASK_SOURCES:
    raise ConfigError(f"data.source={cfg.source!r} is not a task {TASK_SOURCES}")
  cls = tasks.TASKS[cfg.source]
  own = {f.name for f in dataclasses.fields(cls)}
  default = DataConfig()
  knobs = {}
  for k in KNOBS:
    v = getattr(cfg, k)
    if v == getattr(default, k):
      continue
    if k not in own:
      raise ConfigError(f"data.{k}={v!r} is not a knob of data.source={cfg.source!r} (its knobs: "
                        + ", ".join(f"data.{o}" for o in sorted(own & set(KNOBS) | {"seq_len"} & own))
                        + ")")
    knobs[k] = v
  T = cfg.eval_seq_len if split == "val" and cfg.eval_seq_len else cfg.seq_len
  if "seq_len" in own:
    knobs["seq_len"] = T
  elif cfg.eval_seq_len:
    raise ConfigError(f"data.eval_seq_len={cfg.eval_seq_len}: data.source={cfg.source!r} has no "
                      "free length (its knobs fix it)")
  try:
    t = cls(**knobs)
  except ConfigError as e:        # "mqar: num_pairs=9 needs ..." -> "data.source='mqar': data.num_pairs=9 ..."
    msg = str(e).split(": ", 1)[-1]
    msg = re.sub(rf"\b({'|'.join(sorted(own, key=len, reverse=True))})=", r"data.\1=", msg)
    raise ConfigError(f"data.source={cfg.source!r}: {msg}") from None
  if tasks.seq_len(t) != T:
    raise ConfigError(f"data.seq_len={T} must equal {cfg.source}'s length {tasks.seq_len(t)} (2*data.n "
                      "with data.layout='interleave', data.n with 'concat')")   # only it has no seq_len knob
  return t


def check_task(cfg: DataConfig, m) -> None:
  """A task source against the model config `m` (base.validate): the knobs, both splits' lengths,
  the vocabulary and the read-in."""
  t, v = task(cfg, "train"), task(cfg, "val")
  if cfg.pack:
    raise ConfigError(f"data.pack=true: data.source={cfg.source!r} makes whole examples, nothing to pack")
  if m.pos == "learned" and tasks.seq_len(v) > m.max_len:
    raise ConfigError(f"data.eval_seq_len={tasks.seq_len(v)} exceeds model.max_len={m.max_len}, the size "
                      "of the learned position table")
  if isinstance(t, tasks.LinearRegression):
    if m.d_in != t.input_dim:
      raise ConfigError(f"data.source='linear_regression' reads rows of data.d+1={t.input_dim} reals: "
                        f"set model.d_in={t.input_dim} (model.d_in={m.d_in}"
                        + ("" if "d_in" in {f.name for f in dataclasses.fields(m)}
                           else f"; model.name={m.name!r} has no real-valued read-in, use decoder")
                        + ")")
  elif m.d_in:
    raise ConfigError(f"model.d_in={m.d_in}: data.source={cfg.source!r} is a token task (model.d_in=0)")
  elif t.vocab_size > m.vocab_size:
    raise ConfigError(f"model.vocab_size={m.vocab_size} is smaller than data.source={cfg.source!r}'s "
                      f"vocabulary (data.vocab_size: {t.vocab_size})")
