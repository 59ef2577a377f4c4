"""Procedural tasks (data/tasks.py): shapes, determinism, splits, answers checked by independent decoders,
knob validation, the regression baselines and the accuracy metric."""
import dataclasses

import numpy as np
import pytest

from configs.base import ConfigError
from data import pipeline, tasks

KEYS = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32,
        "positions": np.int32}
TOKEN_TASKS = [tasks.MQAR(vocab_size=256, num_pairs=8, seq_len=64),
               tasks.MQAR(vocab_size=64, num_pairs=6, seq_len=40, num_queries=3, power_a=1.0),
               tasks.SelectiveCopy(vocab_size=16, num_tokens=8, seq_len=64),
               tasks.InductionHeads(vocab_size=16, seq_len=64),
               tasks.Phonebook(num_entries=6, name_len=2, number_len=3, vocab_size=40),
               tasks.Phonebook(num_entries=3, name_len=1, number_len=2, vocab_size=15, seq_len=30)]
IDS = [repr(t) for t in TOKEN_TASKS]
B = 16


def _examples(task, split="train", n=B, seed=0):
  b = tasks.batch(task, seed, split, 0, n)
  return [{k: v[j] for k, v in b.items()} for j in range(n)]


# ---------------------------------------------------------------------------------------------
# Independent decoders: parse the inputs back, return {answer position: the answer it must be}.

def decode_mqar(task, inputs):
  N, V = task.num_pairs, task.vocab_size
  keys, values = inputs[0:2 * N:2], inputs[1:2 * N:2]
  assert len(set(keys.tolist())) == N and len(set(values.tolist())) == N
  assert np.all((1 <= keys) & (keys < V // 2)) and np.all((V // 2 <= values) & (values < V))
  return dict(zip(keys.tolist(), values.tolist()))      # noise may repeat a key: the weights mark queries


def decode_copy(task, inputs):
  T, M = task.seq_len, task.num_tokens
  region, markers = inputs[:T - M], inputs[T - M:]
  assert np.all(markers == task.vocab_size - 1) and not np.any(region == task.vocab_size - 1)
  data = region[region != 0]
  assert len(data) == M
  return dict(zip(range(T - M, T), data.tolist()))


def decode_induction(task, inputs):
  special = np.flatnonzero(inputs == 0)
  T = len(inputs)
  assert len(special) == 2 and special[1] == T - 1 and special[0] + 1 < T - 1
  return {T - 1: int(inputs[special[0] + 1])}


def decode_phonebook(task, inputs):
  L, M, E = task.name_len, task.number_len, task.num_entries
  entry = L + 1 + M
  book = {}
  nlo, nhi = task.name_vocab
  mlo, mhi = task.number_vocab
  for e in range(E):
    name, sep, number = inputs[e * entry:e * entry + L], inputs[e * entry + L], inputs[e * entry + L + 1:
                                                                                         (e + 1) * entry]
    assert sep == task.SEP and np.all((nlo <= name) & (name < nhi)) and np.all((mlo <= number) & (number < mhi))
    assert tuple(name) not in book
    book[tuple(name.tolist())] = number.tolist()
  q = E * entry
  assert inputs[q] == task.QUERY and inputs[q + 1 + L] == task.SEP
  number = book[tuple(inputs[q + 1:q + 1 + L].tolist())]
  # teacher forcing: inputs after the query's SEP are the number's first M-1 tokens
  assert inputs[q + 2 + L:q + 1 + L + M].tolist() == number[:-1]
  return dict(zip(range(q + 1 + L, q + 1 + L + M), number))


@pytest.mark.parametrize("task", TOKEN_TASKS, ids=IDS)
def test_answers_correct_by_construction(task):
  T = task.length
  for ex in _examples(task):
    inputs, targets, weights = ex["inputs"], ex["targets"], ex["weights"]
    ans = np.flatnonzero(weights)
    assert set(np.unique(weights).tolist()) <= {0.0, 1.0} and len(ans) > 0
    assert np.all((0 <= inputs) & (inputs < task.vocab_size))
    if isinstance(task, tasks.MQAR):
      table = decode_mqar(task, inputs)
      N = task.num_pairs
      assert len(ans) == task.queries and np.all(ans >= 2 * N) and np.all((ans - 2 * N) % 2 == 0)
      assert len(set(inputs[ans].tolist())) == task.queries            # each queried key once
      expected = {int(t): table[int(inputs[t])] for t in ans}
    elif isinstance(task, tasks.SelectiveCopy):
      expected = decode_copy(task, inputs)
    elif isinstance(task, tasks.InductionHeads):
      expected = decode_induction(task, inputs)
    else:
      expected = decode_phonebook(task, inputs)
      if task.seq_len:                                                  # padded at the end
        assert np.all(ex["segment_ids"][task.min_seq_len:] == 0) and np.all(inputs[task.min_seq_len:] == 0)
    assert sorted(expected) == ans.tolist()
    assert [int(targets[t]) for t in ans] == [expected[t] for t in ans]
    # elsewhere the target is the next input (weight 0: no loss)
    rest = np.setdiff1d(np.arange(T - 1), ans)
    assert np.array_equal(targets[rest], inputs[rest + 1])


@pytest.mark.parametrize("task", TOKEN_TASKS, ids=IDS)
def test_shapes_dtypes_determinism_splits(task):
  T = task.length
  b = tasks.batch(task, 3, "train", 10, 4)
  assert set(b) == set(KEYS)
  for k, dt in KEYS.items():
    assert b[k].shape == (4, T) and b[k].dtype == dt, k
  seg = b["segment_ids"]
  assert np.all(b["positions"] == np.where(seg > 0, np.arange(T), 0))
  assert np.all(b["weights"][seg == 0] == 0)
  # example i is a pure function of (seed, split, i): any batch boundary gives the same examples
  again = tasks.batch(task, 3, "train", 8, 8)
  for k in KEYS:
    assert np.array_equal(b[k], again[k][2:6])
  e = tasks.example(task, 3, "train", 11)
  assert all(np.array_equal(e[k], b[k][1]) for k in KEYS)
  # different index, seed or split: a different draw
  assert not np.array_equal(b["inputs"][0], b["inputs"][1])
  assert not np.array_equal(tasks.example(task, 4, "train", 10)["inputs"], b["inputs"][0])
  val = tasks.batch(task, 3, "val", 10, 4)
  assert not any(np.array_equal(val["inputs"][j], b["inputs"][j]) for j in range(4))
  assert not np.array_equal(tasks.example(task, 3, "test", 10)["inputs"], b["inputs"][0])


def test_split_disjoint_for_realistic_sizes():
  task = tasks.MQAR(vocab_size=8192, num_pairs=8, seq_len=64)
  train = {e["inputs"].tobytes() for e in _examples(task, "train", 64)}
  val = {e["inputs"].tobytes() for e in _examples(task, "val", 64)}
  assert len(train) == len(val) == 64 and not train & val


def test_mqar_power_law_puts_queries_early():
  def mean_offset(power_a):
    task = tasks.MQAR(vocab_size=512, num_pairs=4, seq_len=256, power_a=power_a)
    b = tasks.batch(task, 0, "train", 0, 64)
    return (np.nonzero(b["weights"])[1] - 8).mean()
  assert mean_offset(0.01) < 0.5 * mean_offset(1.0)


def test_induction_any_length():
  """Eval at other lengths than training (extrapolation): every seq_len >= 3 is valid."""
  task = tasks.InductionHeads(vocab_size=8, seq_len=32)
  for T in (3, 4, 33, 1000, 5000):
    long = dataclasses.replace(task, seq_len=T)
    for ex in _examples(long, "val", 4):
      assert ex["inputs"].shape == (T,)
      assert decode_induction(long, ex["inputs"]) == {T - 1: int(ex["targets"][T - 1])}
      assert np.flatnonzero(ex["weights"]).tolist() == [T - 1]


def test_phonebook_length_and_padding():
  task = tasks.Phonebook(num_entries=3, name_len=2, number_len=4, vocab_size=20)
  assert task.length == task.min_seq_len == 3 * 7 + 7 and task.seq_len == 0
  padded = dataclasses.replace(task, seq_len=40)
  a, b = tasks.example(task, 0, "train", 5), tasks.example(padded, 0, "train", 5)
  assert b["inputs"].shape == (40,)
  for k in KEYS:
    assert np.array_equal(b[k][:28], a[k]) and not b[k][28:].any()


@pytest.mark.parametrize("cls,knobs,match", [
    (tasks.MQAR, {"num_pairs": 40, "seq_len": 128}, r"mqar: num_pairs=40 needs seq_len >= 160"),
    (tasks.MQAR, {"vocab_size": 16, "num_pairs": 8}, r"num_pairs=8 needs vocab_size >= 18"),
    (tasks.MQAR, {"num_queries": 9, "num_pairs": 8}, r"num_queries=9"),
    (tasks.MQAR, {"power_a": 0.0}, r"power_a=0.0 must be > 0"),
    (tasks.SelectiveCopy, {"num_tokens": 16, "seq_len": 31}, r"selective_copy: num_tokens=16 needs seq_len >= 32"),
    (tasks.SelectiveCopy, {"vocab_size": 2}, r"vocab_size=2"),
    (tasks.InductionHeads, {"seq_len": 2}, r"induction: seq_len=2"),
    (tasks.InductionHeads, {"vocab_size": 2}, r"vocab_size=2"),
    (tasks.Phonebook, {"num_entries": 20, "name_len": 1, "vocab_size": 40}, r"phonebook: num_entries=20"),
    (tasks.Phonebook, {"seq_len": 10}, r"seq_len=10 is shorter"),
    (tasks.Phonebook, {"number_len": 0}, r"number_len=0"),
    (tasks.LinearRegression, {"layout": "stack"}, r"linear_regression: layout='stack'"),
    (tasks.LinearRegression, {"d": 0}, r"d=0"),
    (tasks.LinearRegression, {"sigma": -1.0}, r"sigma=-1.0"),
])
def test_knob_validation(cls, knobs, match):
  with pytest.raises(ConfigError, match=match):
    cls(**knobs)


def test_make_and_bad_arguments():
  assert tasks.make("mqar", num_pairs=4) == tasks.MQAR(num_pairs=4)
  with pytest.raises(ConfigError, match="num_pair"):
    tasks.make("mqar", num_pair=4)
  with pytest.raises(ConfigError, match="not one of"):
    tasks.make("mqar_v2")
  with pytest.raises(ValueError, match="split"):
    tasks.example(tasks.MQAR(), 0, "dev", 0)
  with pytest.raises(ValueError, match="seed=-1"):
    tasks.example(tasks.MQAR(), -1, "train", 0)


def test_source_feeds_pipeline_batches():
  """TaskExamples is an index-based source and plugs into pipeline.Batches (in-order mode)."""
  task = TOKEN_TASKS[0]
  src = tasks.TaskExamples(task, 7, "train")
  assert all(np.array_equal(src[5][k], tasks.example(task, 7, "train", 5)[k]) for k in KEYS)
  batches = pipeline.Batches(src, 4, 100, None)
  for k_batch in (0, 3):
    want = tasks.batch(task, 7, "train", 4 * k_batch, 4)
    got = batches[k_batch]
    assert all(np.array_equal(got[k], want[k]) for k in KEYS)


def test_describe_covers_every_task():
  text = tasks.describe()
  for name in tasks.TASKS:
    assert f"{name}:" in text
  assert "inputs" in tasks.describe(TOKEN_TASKS[0])


# ---------------------------------------------------------------------------------------------
# Accuracy over answer positions.

def test_accuracy():
  task = TOKEN_TASKS[2]
  b = tasks.batch(task, 0, "val", 0, 4)
  pred = np.where(b["weights"] > 0, b["targets"], -1)       # every answer right, everything else wrong
  acc = tasks.accuracy(pred, b)
  assert acc["accuracy"] == 1.0 and acc["seq_accuracy"] == 1.0 and acc["answers"] == 4 * task.num_tokens
  t = np.flatnonzero(b["weights"][1])[2]
  pred[1, t] += 1                                            # one wrong answer in example 1
  acc = tasks.accuracy(pred, b)
  assert acc["accuracy"] == pytest.approx(1 - 1 / (4 * task.num_tokens))
  assert acc["seq_accuracy"] == 0.75 and acc["correct"].tolist() == [True, False, True, True]
  logits = np.eye(task.vocab_size + 1)[np.where(b["weights"] > 0, b["targets"], 0)]
  assert tasks.accuracy(logits, b)["seq_accuracy"] == 1.0


# ---------------------------------------------------------------------------------------------
# In-context linear regression and its baselines.

def test_regression_examples():
  for layout in ("interleave", "concat"):
    task = tasks.LinearRegression(d=5, n=12, layout=layout)
    b = tasks.batch(task, 0, "train", 0, 8)
    T = task.length
    assert b["inputs"].shape == (8, T, 6) and b["inputs"].dtype == np.float32
    for k in ("targets", "weights"):
      assert b[k].shape == (8, T) and b[k].dtype == np.float32
    assert b["xs"].shape == (8, 12, 5) and b["ys"].shape == (8, 12) and b["w"].shape == (8, 5)
    for j in range(8):
      xs, ys, w = (b[k][j].astype(np.float64) for k in ("xs", "ys", "w"))
      np.testing.assert_allclose(ys, xs @ w, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(np.linalg.lstsq(xs, ys, rcond=None)[0], w, rtol=1e-4, atol=1e-4)
      inp, tgt, wt = b["inputs"][j], b["targets"][j], b["weights"][j]
      ks = tasks.context_lengths(task)
      if layout == "interleave":           # rows (x_i, 0), (0, y_i); target y_i at row 2i
        assert np.array_equal(inp[0::2, :5], xs.astype(np.float32)) and not inp[0::2, 5].any()
        assert np.array_equal(inp[1::2, 5], b["ys"][j]) and not inp[1::2, :5].any()
        assert np.array_equal(tgt[wt > 0], b["ys"][j]) and ks[wt > 0].tolist() == list(range(12))
      else:                                # rows (x_i, y_i), the last (x_q, 0); one target
        assert np.array_equal(inp[:, :5], xs.astype(np.float32)) and inp[-1, 5] == 0
        assert np.array_equal(inp[:-1, 5], b["ys"][j][:-1])
        assert np.flatnonzero(wt).tolist() == [11] and tgt[11] == b["ys"][j][11] and ks[11] == 11
    a = tasks.example(task, 0, "train", 3)
    assert all(np.array_equal(a[k], b[k][3]) for k in a)
    assert not np.array_equal(tasks.example(task, 0, "val", 3)["w"], a["w"])
  noisy = tasks.batch(tasks.LinearRegression(d=4, n=50, sigma=0.5), 0, "train", 0, 40)
  resid = noisy["ys"] - np.einsum("bnd,bd->bn", noisy["xs"], noisy["w"])
  assert abs(resid.std() - 0.5) < 0.05


def test_baselines_ols_ridge_gd():
  d = 4
  task = tasks.LinearRegression(d=d, n=40)
  b = tasks.batch(task, 0, "val", 0, 256)
  base = tasks.baselines(b, ridge_lambda=1e-9)
  assert base["ols"].shape == (256, 40) and base["k"].tolist() == list(range(40))
  assert np.all(base["ols"][:, d:] < 1e-6)                       # exact for k >= d without noise (up to
  assert np.median(base["ols"][:, d:]) < 1e-12                     # the float32 rounding of the draws)
  assert base["ols"][:, 1:d].mean() > 0.1                          # underdetermined before
  # lambda -> 0: ridge -> (min-norm) OLS, on average (a nearly singular X converges last)
  gaps = [np.abs(tasks.baselines(b, ridge_lambda=lam)["ridge"] - base["ols"]).mean() for lam in (1, 1e-3, 1e-6)]
  assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * base["ols"].mean()
  np.testing.assert_allclose(np.median(np.abs(base["ridge"] - base["ols"])), 0, atol=1e-12)
  assert base["zero"].mean() == pytest.approx(d, rel=0.2)          # E|w|^2 = d
  # with noise, ridge at the Bayes-optimal lambda = sigma^2 beats OLS, most at OLS's peak k = d
  noisy = tasks.batch(tasks.LinearRegression(d=d, n=40, sigma=0.5), 0, "val", 0, 256)
  r = tasks.baselines(noisy, ridge_lambda=0.25)
  assert r["ridge"][:, 1:].mean() < r["ols"][:, 1:].mean() and r["ridge"][:, d].mean() < 0.5 * r["ols"][:, d].mean()
  gd = base["gd"].mean(0)
  assert gd[0] == pytest.approx(base["zero"][:, 0].mean())
  assert gd[2] > gd[8] > gd[32] and gd[39] < 0.25 * gd[1]          # decreases with k on average
  # one example gives the row of the batched call
  one = tasks.baselines({k: b[k][5] for k in ("xs", "ys")}, max_k=10, ridge_lambda=0.3, eta=0.7)
  many = tasks.baselines(b, max_k=10, ridge_lambda=0.3, eta=0.7)
  for name in ("ols", "ridge", "gd", "zero"):
    np.testing.assert_allclose(one[name], many[name][5], rtol=1e-9, atol=1e-12)
  with pytest.raises(ValueError, match="max_k=40"):
    tasks.baselines(b, max_k=40)


def test_gd_and_ridge_closed_form_by_hand():
  # X = [[1, 0], [0, 2]], y = [1, 4], query x = [1, 1], y_q = 3.
  ex = {"xs": np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), "ys": np.array([1.0, 4.0, 3.0])}
  out = tasks.baselines(ex, max_k=2, ridge_lambda=1.0, eta=0.5)
  # gd: w_1 = (eta/k) X^T y = 0.25 * [1, 8] = [0.25, 2]; prediction 2.25
  assert out["gd"][2] == pytest.approx((2.25 - 3.0) ** 2)
  # ols: w = [1, 2]; prediction 3, exact
  assert out["ols"][2] == pytest.approx(0.0, abs=1e-20)
  # ridge: (X^T X + I)^-1 X^T y = [1/2, 8/5]; prediction 2.1
  assert out["ridge"][2] == pytest.approx((2.1 - 3.0) ** 2)
  # k = 1: X = [[1, 0]], y = [1], x_q = [0, 2]: every estimator predicts 0 (min-norm w = [1, 0])
  assert out["ols"][1] == out["gd"][1] == out["ridge"][1] == pytest.approx(16.0)


def test_per_context_error_matches_baseline_curve():
  task = tasks.LinearRegression(d=3, n=10)
  b = tasks.batch(task, 1, "val", 0, 32)
  base = tasks.baselines(b)
  # a "model" that predicts with OLS at every x row reproduces the OLS curve
  pred = np.zeros_like(b["targets"], dtype=np.float64)
  ols_err = base["ols"]
  pred[:, 0::2] = b["targets"][:, 0::2] + np.sqrt(ols_err)
  ks, err = tasks.per_context_error(task, pred, b)
  assert ks.tolist() == list(range(10))
  np.testing.assert_allclose(err, ols_err.mean(0), rtol=1e-5, atol=1e-9)
