"""Tokenizers: exact round trips, the char vocabulary, JSON save/load, build_tokenizer reuse and errors."""
import json

import numpy as np
import pytest

from configs.base import ConfigError, DataConfig
from data import tokenize

SAMPLE = "def f(x):\n  return x * 2  # naïve → ok\n\tπ ≈ 3.14159 😀\n"
CORPUS = ["the quick brown fox jumps over the lazy dog\n" * 20,
          "def add(a, b):\n    return a + b\n" * 20,
          "to be or not to be, that is the question\n" * 20]


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_text(text, encoding="utf-8")
  return p


def test_byte_roundtrip_is_utf8():
  tok = tokenize.ByteTokenizer()
  ids = tok.encode(SAMPLE)
  assert ids.dtype == np.int32 and tok.vocab_size == 256
  np.testing.assert_array_equal(ids, list(SAMPLE.encode("utf-8")))
  assert tok.decode(ids) == SAMPLE
  assert tok.decode([0xE2, 0x86]) == "\ufffd"   # half a character decodes to U+FFFD instead of failing


def test_char_vocab_is_sorted_set_of_train_and_val(tmp_path):
  # "Z" and "é" occur only in the last 10% (the val part): nanoGPT's vocab still contains them.
  text = "hello world, abc\n" * 9 + "Zé" * 9
  f = _write(tmp_path, "c.txt", text)
  cfg = DataConfig(source="text", path=str(f), tokenizer="char")
  tok = tokenize.build_tokenizer(cfg, None)
  assert tok.chars == sorted(set(text)) and tok.vocab_size == len(set(text))
  ids = tok.encode(text)
  np.testing.assert_array_equal(ids, [sorted(set(text)).index(c) for c in text])
  assert tok.decode(ids) == text
  with pytest.raises(ValueError, match="'q'"):
    tok.encode("hello q")


def test_bpe_trained_roundtrip_and_compression(tmp_path):
  tok = tokenize.BpeTokenizer.train(CORPUS, vocab_size=300)
  assert 256 < tok.vocab_size <= 300
  for text in CORPUS + [SAMPLE, ""]:           # SAMPLE has characters never seen in training
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and (ids < tok.vocab_size).all()
    assert tok.decode(ids) == text
  assert len(tok.encode(CORPUS[0])) < len(CORPUS[0]) / 2   # merges were learned
  batch = tok.encode_batch(CORPUS)
  for text, ids in zip(CORPUS, batch):
    np.testing.assert_array_equal(ids, tok.encode(text))


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_save_load_json_roundtrip(tmp_path, kind):
  f = _write(tmp_path, "corpus.txt", "".join(CORPUS) + SAMPLE)
  cfg = DataConfig(source="text", path=str(f), tokenizer=kind, bpe_vocab_size=280)
  workdir = tmp_path / "run"
  tok = tokenize.build_tokenizer(cfg, workdir)
  saved = workdir / "tokenizer.json"
  json.loads(saved.read_text(encoding="utf-8"))          # plain JSON, no pickle
  again = tokenize.Tokenizer.load(workdir)
  assert (again.name, again.vocab_size) == (tok.name, tok.vocab_size)
  np.testing.assert_array_equal(again.encode(SAMPLE), tok.encode(SAMPLE))
  # build_tokenizer reuses the workdir's file even if the corpus changed since.
  f.write_text("entirely different text XYZ\n", encoding="utf-8")
  reused = tokenize.build_tokenizer(cfg, workdir)
  np.testing.assert_array_equal(reused.encode(SAMPLE), tok.encode(SAMPLE))


def test_bpe_from_tokenizer_path(tmp_path):
  trained = tokenize.BpeTokenizer.train(CORPUS, vocab_size=290)
  path = trained.save(tmp_path / "tok")                   # an HF tokenizer.json
  cfg = DataConfig(source="tokens", path="unused.bin", tokenizer="bpe", tokenizer_path=str(path))
  tok = tokenize.build_tokenizer(cfg, None)
  np.testing.assert_array_equal(tok.encode(CORPUS[1]), trained.encode(CORPUS[1]))


def test_tokenizer_errors(tmp_path):
  workdir = tmp_path / "run"
  tokenize.ByteTokenizer().save(workdir)
  with pytest.raises(ConfigError, match="holds a 'byte' tokenizer"):
    tokenize.build_tokenizer(DataConfig(tokenizer="char"), workdir)
  with pytest.raises(ConfigError, match="missing.json"):
    tokenize.build_tokenizer(DataConfig(tokenizer="bpe", tokenizer_path=str(tmp_path / "missing.json")))
  with pytest.raises(ConfigError, match="token ids"):
    tokenize.build_tokenizer(DataConfig(source="tokens", path="x.bin", tokenizer="char"))
  bad = _write(tmp_path, "bad.json", "{not json")
  with pytest.raises(ConfigError, match="bad.json"):
    tokenize.Tokenizer.load(bad)
  with pytest.raises(ConfigError, match="bpe_vocab_size=100"):
    f = _write(tmp_path, "c.txt", CORPUS[0])
    tokenize.build_tokenizer(DataConfig(source="text", path=str(f), tokenizer="bpe", bpe_vocab_size=100))
