"""Data pipeline: sources and splits, windows, packing, determinism, resume, process shards, errors."""
import json

import numpy as np
import pytest

from configs.base import ConfigError, DataConfig
from data import pipeline, sources, tokenize

KEYS = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32,
        "positions": np.int32}
BYTE = tokenize.ByteTokenizer()


def _text(n, seed=0):
  rng = np.random.default_rng(seed)
  return "".join(rng.choice(list("abcdefgh \n"), n))


def _text_cfg(tmp_path, text, **kw):
  f = tmp_path / "corpus.txt"
  f.write_text(text, encoding="utf-8")
  return DataConfig(source="text", path=str(f), **kw)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _check_batch(batch, b, T):
  assert set(batch) == set(KEYS)
  for k, dtype in KEYS.items():
    assert batch[k].shape == (b, T) and batch[k].dtype == dtype, k


def test_windows_are_stream_slices(tmp_path):
  text, T, b = _text(1000), 16, 4
  cfg = _text_cfg(tmp_path, text, seq_len=T)
  val = np.frombuffer(text[900:].encode(), np.uint8)       # nanoGPT: the last 10% of the characters
  batches = list(pipeline.build_dataset(cfg, BYTE, "val", batch_size=b, seed=0))
  assert len(batches) == ((len(val) - 1) // T) // b        # one pass, whole batches only
  for k, batch in enumerate(batches):
    _check_batch(batch, b, T)
    for r in range(b):
      i = k * b + r
      np.testing.assert_array_equal(batch["inputs"][r], val[i * T:i * T + T])
      np.testing.assert_array_equal(batch["targets"][r], val[i * T + 1:i * T + T + 1])
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
    np.testing.assert_array_equal(batch["positions"], np.broadcast_to(np.arange(T), (b, T)))
    assert (batch["segment_ids"] == 1).all() and (batch["weights"] == 1).all()


def test_train_epoch_is_a_permutation_then_reshuffled(tmp_path):
  text, T, b = _text(900 * 8 + 10), 8, 6     # train: 7209 bytes -> 901 windows
  cfg = _text_cfg(tmp_path, text, seq_len=T)
  stream = np.frombuffer(text[:int(len(text) * 0.9)].encode(), np.uint8).astype(np.int32)
  n = (len(stream) - 1) // T
  rows = np.concatenate([x["inputs"] for x in _take(pipeline.build_dataset(cfg, BYTE, "train", batch_size=b,
                                                                      seed=1), 2 * n // b + 1)])
  windows = {stream[i * T:i * T + T].tobytes(): i for i in range(n)}
  assert len(windows) == n                                   # (this random text has no repeated window)
  order = [windows[r.tobytes()] for r in rows]               # every row is one of the windows
  assert sorted(order[:n]) == list(range(n))                 # epoch 1 visits each window once
  assert sorted(order[n:2 * n]) == list(range(n))            # so does epoch 2 (batches straddle epochs)
  assert order[:n] != list(range(n)) and order[:n] != order[n:2 * n]


def test_random_sampling_is_nanogpts(tmp_path, monkeypatch):
  # nanoGPT's get_batch: start ~ U{0, ..., N-T-1}, inputs = stream[s:s+T], targets = stream[s+1:s+T+1].
  monkeypatch.setattr(pipeline.Batches, "IID_BLOCK", 50)        # so batches straddle blocks here
  text, T, b = _text(4000), 16, 6
  cfg = _text_cfg(tmp_path, text, seq_len=T, sampling="random")
  stream = np.frombuffer(text[:3600].encode(), np.uint8).astype(np.int32)
  starts = {stream[i:i + T].tobytes(): i for i in range(len(stream) - T)}
  assert len(starts) == len(stream) - T                      # no repeated window in this random text
  batches = _take(pipeline.build_dataset(cfg, BYTE, "train", batch_size=b, seed=5), 100)
  s = np.array([starts[r.tobytes()] for x in batches for r in x["inputs"]])
  for k, x in enumerate(batches):
    np.testing.assert_array_equal(x["targets"], stream[s[k * b:(k + 1) * b, None] + 1 + np.arange(T)])
  assert 0 <= s.min() < 100 and len(stream) - T - 100 < s.max() <= len(stream) - T - 1
  assert (s % T != 0).mean() > 0.8 and len(set(s.tolist())) > 0.8 * len(s)   # any offset, mostly new
  assert abs(s.mean() / (len(stream) - T - 1) - 0.5) < 0.05                 # uniform: mean 0.5 +- 4 sd
  # Deterministic, resumable mid-block, and val keeps the in-order stride-T windows.
  it = pipeline.build_dataset(cfg, BYTE, "train", batch_size=b, seed=5)
  _take(it, 37)
  fresh = pipeline.build_dataset(cfg, BYTE, "train", batch_size=b, seed=5)
  fresh.set_state(json.loads(json.dumps(it.get_state())))
  for x, y in zip(_take(fresh, 20), batches[37:57]):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
  val = next(pipeline.build_dataset(cfg, BYTE, "val", batch_size=b, seed=5))
  np.testing.assert_array_equal(val["inputs"][1], np.frombuffer(text[3600 + T:3600 + 2 * T].encode(),
                                                                 np.uint8))
  with pytest.raises(ConfigError, match="data.sampling='random' needs data.pack=false"):
    pipeline.build_dataset(_text_cfg(tmp_path, text, sampling="random", pack=True), BYTE, "train",
                       batch_size=b, seed=0)


def test_determinism_and_resume(tmp_path):
  cfg = _text_cfg(tmp_path, _text(3000), seq_len=8)
  kw = dict(batch_size=4, seed=7)
  ref = _take(pipeline.build_dataset(cfg, BYTE, "train", **kw), 200)   # > 2 epochs of 84 batches
  again = _take(pipeline.build_dataset(cfg, BYTE, "train", **kw), 200)
  other = _take(pipeline.build_dataset(cfg, BYTE, "train", batch_size=4, seed=8), 5)
  for x, y in zip(ref, again):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  assert not all((x["inputs"] == y["inputs"]).all() for x, y in zip(ref, other))
  for stop in (0, 3, 83, 150):
    it = pipeline.build_dataset(cfg, BYTE, "train", **kw)
    _take(it, stop)
    state = json.loads(json.dumps(it.get_state()))            # it must survive JSON
    fresh = pipeline.build_dataset(cfg, BYTE, "train", **kw)
    fresh.set_state(state)
    for x, y in zip(_take(fresh, 30), ref[stop:stop + 30]):
      np.testing.assert_array_equal(x["inputs"], y["inputs"])


@pytest.mark.parametrize("split,pack,sampling", [("train", False, "epochs"), ("val", False, "epochs"),
                                                 ("train", True, "epochs"), ("train", False, "random")])
def test_process_shards_partition_the_global_batch(tmp_path, split, pack, sampling):
  docs = "".join(_text(int(n), seed=i) + "\n\n" for i, n in enumerate(np.linspace(3, 90, 60)))
  cfg = _text_cfg(tmp_path, docs * 3, seq_len=8, pack=pack, sampling=sampling)
  b, P, steps = 2, 3, 4
  single = _take(pipeline.build_dataset(cfg, BYTE, split, batch_size=b * P, seed=3), steps)
  shards = [_take(pipeline.build_dataset(cfg, BYTE, split, batch_size=b, seed=3, process_index=p,
                                     process_count=P), steps) for p in range(P)]
  for k in range(steps):
    for key in KEYS:
      np.testing.assert_array_equal(np.concatenate([s[k][key] for s in shards]), single[k][key])
  # Every example index appears once across processes: rows in one epoch are distinct windows.
  rows = {r.tobytes() for s in shards for batch in s for r in batch["inputs"]}
  assert len(rows) == steps * b * P or sampling == "random"    # (random: drawn with replacement)
  # Val: every process runs the same number of batches.
  if split == "val":
    counts = [len(list(pipeline.build_dataset(cfg, BYTE, "val", batch_size=b, seed=0, process_index=p,
                                          process_count=P))) for p in range(P)]
    assert len(set(counts)) == 1


def test_packing_hand_built():
  #          doc A      doc B (6 pairs: one full window + a tail)   C (1 token)  D
  tokens = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], np.uint16)
  bounds = np.array([0, 3, 10, 11, 13])
  packed = pipeline.Packed(tokens, bounds, seq_len=4)
  got = packed.gather(np.arange(len(packed)))
  # Row 0: B's full window. Row 1: best fit puts A (2 pairs) and B's tail (2 pairs) together. Row 2: D.
  np.testing.assert_array_equal(got["inputs"], [[4, 5, 6, 7], [1, 2, 8, 9], [12, 0, 0, 0]])
  np.testing.assert_array_equal(got["targets"], [[5, 6, 7, 8], [2, 3, 9, 10], [13, 0, 0, 0]])
  np.testing.assert_array_equal(got["segment_ids"], [[1, 1, 1, 1], [1, 1, 2, 2], [1, 0, 0, 0]])
  np.testing.assert_array_equal(got["positions"], [[0, 1, 2, 3], [0, 1, 0, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(got["weights"], [[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]])


def test_packing_keeps_every_within_document_pair():
  rng = np.random.default_rng(0)
  lens = rng.integers(1, 40, 50)
  tokens = rng.integers(0, 1000, lens.sum()).astype(np.uint16)
  bounds = np.concatenate([[0], np.cumsum(lens)])
  T = 16
  packed = pipeline.Packed(tokens, bounds, T)
  got = packed.gather(np.arange(len(packed)))
  w = got["weights"] > 0
  assert ((got["segment_ids"] > 0) == w).all()
  have = sorted(zip(got["inputs"][w].tolist(), got["targets"][w].tolist()))
  want = sorted((int(tokens[i]), int(tokens[i + 1])) for a, z in zip(bounds[:-1], bounds[1:])
                for i in range(a, z - 1))
  assert have == want                          # each document pair exactly once, none across documents
  pos = got["positions"]
  starts = (got["segment_ids"][:, 1:] != got["segment_ids"][:, :-1]) & w[:, 1:]
  assert (pos[:, 1:][starts] == 0).all() and (pos[:, 0] == 0).all()
  assert (pos[:, 1:][w[:, 1:] & ~starts] == pos[:, :-1][w[:, 1:] & ~starts] + 1).all()
  # Best-fit never needs more rows than the total pairs / T rounded up plus one row per full window's slack.
  assert len(packed) < w.size / T * 1.3
  rows = pipeline.pack_best_fit([5, 9, 3, 7, 1, 8, 2], 10)
  assert sorted(i for r in rows for i in r) == list(range(7))
  assert all(sum([5, 9, 3, 7, 1, 8, 2][i] for i in r) <= 10 for r in rows) and len(rows) == 4


def test_tokens_source(tmp_path):
  rng = np.random.default_rng(0)
  d = tmp_path / "bins"
  d.mkdir()
  train, val = rng.integers(0, 256, 500).astype(np.uint16), rng.integers(0, 256, 90).astype(np.uint16)
  train.tofile(d / "train.bin")
  val.tofile(d / "val.bin")
  batch = next(pipeline.build_dataset(DataConfig(source="tokens", path=str(d), seq_len=8), BYTE, "val",
                                  batch_size=2, seed=0))
  np.testing.assert_array_equal(batch["inputs"], [val[0:8], val[8:16]])
  one = tmp_path / "one.bin"
  train.tofile(one)                                   # a single file: the last 10% is val
  batch = next(pipeline.build_dataset(DataConfig(source="tokens", path=str(one), seq_len=8), BYTE, "val",
                                  batch_size=2, seed=0))
  np.testing.assert_array_equal(batch["targets"][0], train[450 + 1:450 + 9])
  # A new file, not one.bin rewritten: the iterators above may still be prefetching from its memmap,
  # and reading a memmap past a truncated file's end is a SIGBUS.
  bad = tmp_path / "bad.bin"
  (rng.integers(256, 300, 100).astype(np.uint16)).tofile(bad)
  with pytest.raises(ConfigError, match="bad.bin.*token id"):
    pipeline.build_dataset(DataConfig(source="tokens", path=str(bad), seq_len=8), BYTE, "train",
                       batch_size=2, seed=0)


def test_arrayrecord_source_and_packing(tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter
  docs = [_text(int(n), seed=i) for i, n in enumerate(np.linspace(5, 60, 30))]
  path = tmp_path / "docs.array_record"
  w = ArrayRecordWriter(str(path), "group_size:1")
  for doc in docs:
    w.write(doc.encode("utf-8"))
  w.close()
  cfg = DataConfig(source="arrayrecord", path=str(path), seq_len=8, pack=True)
  assert sources.documents(cfg, "train") == docs[:27] and sources.documents(cfg, "val") == docs[27:]
  batch = next(pipeline.build_dataset(cfg, BYTE, "train", batch_size=4, seed=0))
  _check_batch(batch, 4, 8)
  w_ = batch["weights"] > 0
  assert (batch["segment_ids"][w_] > 0).all() and (batch["segment_ids"][~w_] == 0).all()
  pairs = {(a, b) for d in docs[:27] for a, b in zip(d.encode(), d.encode()[1:])}
  assert set(zip(batch["inputs"][w_].tolist(), batch["targets"][w_].tolist())) <= pairs


def test_bytes_per_token(tmp_path):
  text = "naïve café → 東京\n" * 20
  for kind in ("byte", "char", "bpe"):
    cfg = _text_cfg(tmp_path, text, tokenizer=kind, bpe_vocab_size=270)
    tok = tokenize.build_tokenizer(cfg, None)
    val = text[int(len(text) * 0.9):]
    want = len(val.encode("utf-8")) / len(tok.encode(val))
    assert sources.bytes_per_token(cfg, tok, "val") == pytest.approx(want)
    assert kind != "byte" or want == 1.0
    assert kind != "char" or want == len(val.encode("utf-8")) / len(val)


def test_errors_name_the_path(tmp_path):
  def build(**kw):
    return pipeline.build_dataset(DataConfig(**kw), BYTE, "train", batch_size=2, seed=0)
  missing = str(tmp_path / "missing.txt")
  with pytest.raises(ConfigError, match="missing.txt"):
    build(source="text", path=missing)
  with pytest.raises(ConfigError, match=r"nothing\*.txt.*matches no file"):
    build(source="text", path=str(tmp_path / "nothing*.txt"))
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(ConfigError, match="empty.txt.*empty"):
    build(source="text", path=str(empty))
  bad = tmp_path / "latin1.txt"
  bad.write_bytes("ok so far, café".encode("latin-1"))
  with pytest.raises(ConfigError, match="latin1.txt.*offset 14"):
    build(source="text", path=str(bad))
  with pytest.raises(ConfigError, match="data.source='nope'"):
    build(source="nope", path=missing)
  with pytest.raises(ConfigError, match="data.path is empty"):
    build(source="arrayrecord", path="")
  small = _text_cfg(tmp_path, _text(200), seq_len=8)        # val: 20 bytes = 2 windows < batch of 4
  with pytest.raises(ConfigError, match="fewer than one global batch of 4"):
    pipeline.build_dataset(small, BYTE, "val", batch_size=2, seed=0, process_count=2)
  with pytest.raises(ValueError, match="split='test'"):
    pipeline.build_dataset(small, BYTE, "test", batch_size=2, seed=0)


def test_stdlib_smoke():
  train, val = sources.stdlib_files(0.1, "train"), sources.stdlib_files(0.1, "val")
  assert len(train) > 100 and len(val) > 10 and not set(train) & set(val)
  assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
  assert not any("site-packages" in f.parts for f in train + val)
  cfg = DataConfig(seq_len=64)
  it = pipeline.build_dataset(cfg, BYTE, "val", batch_size=8, seed=0)
  batch = next(it)
  _check_batch(batch, 8, 64)
  assert it.get_state() == {"next_index": 1}
  assert sources.bytes_per_token(cfg, BYTE, "val") == 1.0


@pytest.mark.slow
def test_worker_processes_match_in_process(tmp_path):
  cfg = _text_cfg(tmp_path, _text(3000), seq_len=8)
  ref = _take(pipeline.build_dataset(cfg, BYTE, "train", batch_size=4, seed=2), 12)
  mp_cfg = DataConfig(**{**cfg.__dict__, "num_workers": 2})
  it = pipeline.build_dataset(mp_cfg, BYTE, "train", batch_size=4, seed=2)
  got = _take(it, 6)
  state = json.loads(json.dumps(it.get_state()))
  it.close()
  fresh = pipeline.build_dataset(mp_cfg, BYTE, "train", batch_size=4, seed=2)
  fresh.set_state(state)
  got += _take(fresh, 6)
  fresh.close()
  for x, y in zip(got, ref):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
