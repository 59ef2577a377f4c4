"""Tokenizers: `byte` (UTF-8 bytes), `char` (the corpus's own characters), `bpe` (HF byte-level BPE).

Every tokenizer saves itself as one JSON file, `<dir>/tokenizer.json` (no pickle), so eval.py rebuilds
exactly the tokenizer a run trained with from its workdir. byte/char files are a tiny JSON of our own
(`{"seqzoo_tokenizer": ...}`); a bpe file is the HF `tokenizers` JSON itself, so any HF tokenizer.json
(e.g. GPT-2's) can be passed as data.tokenizer_path and our saved files open in HF tools.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from configs.schema import ConfigError, DataConfig
from data import sources

FILENAME = "tokenizer.json"


class Tokenizer:
  """The interface: `name`, `vocab_size`, `encode(str) -> int32[n]`, `decode(ids) -> str`, save/load."""
  name: str
  vocab_size: int

  def encode(self, text: str) -> np.ndarray:
    raise NotImplementedError

  def decode(self, ids) -> str:
    raise NotImplementedError

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    """Many documents at once; bpe overrides it to use the Rust thread pool."""
    return [self.encode(t) for t in texts]

  def to_json(self) -> dict:
    raise NotImplementedError

  def save(self, directory) -> Path:
    """Writes `<directory>/tokenizer.json`. A failed write (a full disk, no permission) is a
    ConfigError naming the file, as for the workdir's config.json, and leaves no part of it."""
    path = Path(directory) / FILENAME
    # Write-then-rename: a crash never leaves half a file; the pid keeps concurrent writers apart.
    tmp = path.with_name(f"{FILENAME}.{os.getpid()}.tmp")
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
      tmp.replace(path)
    except OSError as e:
      with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
      raise ConfigError(f"could not write the tokenizer to {str(path)!r}: "
                        f"{e.strerror or e}") from None
    return path

  @staticmethod
  def load(directory) -> "Tokenizer":
    """Reads `<directory>/tokenizer.json`, or the file itself if a .json path is given."""
    path = Path(directory)
    if path.is_dir() or path.suffix != ".json":
      path = path / FILENAME
    if not path.is_file():
      raise ConfigError(f"no tokenizer file at {str(path)!r}")
    try:
      obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ConfigError(f"{str(path)!r} is not a JSON tokenizer file: {e}") from None
    kind = obj.get("seqzoo_tokenizer") if isinstance(obj, dict) else None
    if kind == "byte":
      return ByteTokenizer()
    if kind == "char":
      return CharTokenizer(obj["chars"])
    if isinstance(obj, dict) and "model" in obj:
      return BpeTokenizer.from_json_str(json.dumps(obj), source=str(path))
    raise ConfigError(f"{str(path)!r} is neither a seqzoo byte/char tokenizer nor an HF tokenizer.json")


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes, vocab 256: no training, nothing out of vocabulary."""
  name = "byte"
  vocab_size = 256

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    # Sampled ids can cut a multi-byte character in half; show U+FFFD rather than fail.
    return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", errors="replace")

  def to_json(self) -> dict:
    return {"seqzoo_tokenizer": "byte"}


class CharTokenizer(Tokenizer):
  """One id per character of the sorted character set (nanoGPT's shakespeare_char: 65 for tinyshakespeare)."""
  name = "char"

  def __init__(self, chars):
    chars = list(chars)
    if not chars or any(len(c) != 1 for c in chars) or sorted(set(chars)) != chars:
      raise ValueError(f"char vocabulary must be sorted distinct single characters, got {chars[:10]!r}...")
    self.chars = chars
    self.vocab_size = len(chars)
    # Code points in sorted order: encode is one vectorised searchsorted, not a Python loop over 30M chars.
    self._codes = np.array([ord(c) for c in chars], np.uint32)

  @classmethod
  def from_texts(cls, texts) -> "CharTokenizer":
    seen = set()
    for t in texts:
      seen.update(t)
    return cls(sorted(seen))

  def encode(self, text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), np.uint32)
    ids = np.searchsorted(self._codes, codes).astype(np.int32)
    bad = (ids >= self.vocab_size) | (self._codes[np.minimum(ids, self.vocab_size - 1)] != codes)
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"character {text[i]!r} at offset {i} is not in the char vocabulary "
                       f"({self.vocab_size} characters)")
    return ids

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in np.asarray(ids).tolist())

  def to_json(self) -> dict:
    return {"seqzoo_tokenizer": "char", "chars": self.chars}


class BpeTokenizer(Tokenizer):
  """HF `tokenizers` byte-level BPE (GPT-2 style): every string is encodable, decode(encode(s)) == s."""
  name = "bpe"

  def __init__(self, hf_tokenizer):
    self._tok = hf_tokenizer
    self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)

  @classmethod
  def from_json_str(cls, text: str, source: str = "<string>") -> "BpeTokenizer":
    import tokenizers
    try:
      return cls(tokenizers.Tokenizer.from_str(text))
    except Exception as e:  # the Rust side raises a bare Exception for malformed files
      raise ConfigError(f"{source!r}: cannot load HF tokenizer: {e}") from None

  @classmethod
  def train(cls, texts, vocab_size: int) -> "BpeTokenizer":
    from tokenizers import Tokenizer as HF, decoders, models, pre_tokenizers, trainers
    tok = HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The full 256-symbol byte alphabet up front: any text stays encodable, whatever the training corpus.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return cls(tok)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encs]

  def decode(self, ids) -> str:
    return self._tok.decode(np.asarray(ids).tolist(), skip_special_tokens=False)

  def to_json(self) -> dict:
    return json.loads(self._tok.to_str())


def build_tokenizer(cfg: DataConfig, workdir=None) -> Tokenizer | None:
  """The run's tokenizer: reuses `workdir/tokenizer.json` if present, else builds it (and saves it there).
  None for a task source (data/tasks.py): its examples are token ids already, its vocabulary the
  task's (data.vocab_size), and nothing is saved."""
  if cfg.task:
    return None
  if cfg.tokenizer not in ("byte", "char", "bpe"):
    raise ConfigError(f"data.tokenizer={cfg.tokenizer!r} is not one of ('byte', 'char', 'bpe')")
  if workdir is not None and (Path(workdir) / FILENAME).is_file():
    tok = Tokenizer.load(workdir)
    if tok.name != cfg.tokenizer:
      raise ConfigError(f"{str(Path(workdir) / FILENAME)!r} holds a {tok.name!r} tokenizer but "
                        f"data.tokenizer={cfg.tokenizer!r}; use a fresh workdir or the run's own setting")
    return tok
  if cfg.tokenizer == "byte":
    tok = ByteTokenizer()
  elif cfg.tokenizer == "bpe" and cfg.tokenizer_path:
    tok = Tokenizer.load(cfg.tokenizer_path)
    if tok.name != "bpe":
      raise ConfigError(f"data.tokenizer_path={cfg.tokenizer_path!r} holds a {tok.name!r} tokenizer, "
                        "not an HF tokenizer.json")
  else:
    if cfg.source == "tokens":
      raise ConfigError(f"data.tokenizer={cfg.tokenizer!r} must be built from text, but data.source="
                        "'tokens' holds token ids; use data.tokenizer=byte or a bpe data.tokenizer_path")
    if cfg.tokenizer == "char":
      # Train AND val text, exactly like nanoGPT's prepare.py: every character of the corpus has an id.
      tok = CharTokenizer.from_texts(sources.documents(cfg, "train") + sources.documents(cfg, "val"))
    else:
      if cfg.bpe_vocab_size < 256:
        raise ConfigError(f"data.bpe_vocab_size={cfg.bpe_vocab_size} is below the 256-byte base alphabet")
      tok = BpeTokenizer.train(sources.documents(cfg, "train"), cfg.bpe_vocab_size)
  if workdir is not None:
    tok.save(workdir)
  return tok
