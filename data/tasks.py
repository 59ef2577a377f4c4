"""Procedural tasks of the seed papers: seeded, download-free examples whose answers are known by construction.

    task = tasks.MQAR(vocab_size=8192, num_pairs=8, seq_len=64)
    ex = tasks.example(task, seed=0, split="train", i=17)     # one example: a pure function of (seed, split, i)
    b = tasks.batch(task, seed=0, split="val", start_index=0, batch_size=32)   # the same, stacked
    tasks.accuracy(pred_ids_BT, b)                             # exact match over the answer positions
    print(tasks.describe())                                    # every task's layout, on a live tiny example

Example i of a split is drawn from `np.random.default_rng([seed, split_id, i])` (split_id: train 0, val 1,
test 2) and nothing else, so an index-based source is resumable by construction and train and val draws are
independent streams (not guaranteed disjoint: a tiny task can repeat an example by chance, as in Zoology).
`TaskExamples` is that source: random access by index, and `gather(idx)` as data/pipeline.py's `Batches`
expects of its examples.

Token tasks give pipeline.py's batch layout, one row per example (T = task.seq_len):
    inputs   int32[T]    the tokens the model reads
    targets  int32[T]    targets[t] = what the model must predict at position t: the answer at an answer
                         position; elsewhere the next input token (inputs[t+1], 0 after the last), which
                         carries no loss
    weights  float32[T]  1.0 exactly on the answer positions, 0 elsewhere: loss and accuracy are over answers
    segment_ids int32[T] 1 (0 on padding), positions int32[T] arange(T) (0 on padding)

Layouts (`describe()` prints each on a live example; `.` = a token that is not an answer):

  mqar            Zoology (Arora et al. 2023), multi-query associative recall. Keys are [1, V//2), values
                  [V//2, V); the first 2*num_pairs tokens are the pairs k1 v1 k2 v2 ...; then each queried
                  key appears once, at an even offset 2*g after the pairs with the gap g drawn without
                  replacement from a power law p(g) ~ (g+1)^(power_a - 1) (Zoology's: most queries come
                  soon after the pairs); every other token is uniform noise in [0, V). The answer (the
                  key's value) is the target AT the query position; the next input is noise, as Zoology.
                    inputs   3 9 5 12 | 5 14  3  7 ...      (pairs 3->9, 5->12; queries 5 and 3)
                    targets  . . .  . | 12 .  9  . ...
  selective_copy  Mamba §4.1 (the S4 repo's copying data, variable=True). Token 0 is noise, V-1 the marker,
                  data tokens [1, V-1). num_tokens data tokens at sorted random positions among noise in the
                  first T - num_tokens positions, then num_tokens markers; at the j-th marker the answer
                  is the j-th data token (the model never sees its own outputs).
                    inputs   0 4 0 0 2 0 | 7 7     (V=8, num_tokens=2)
                    targets  . . . . . . | 4 2
  induction       Mamba §4.1 (the H3/safari generator, one trigger). Token 0 is the special token, the rest
                  uniform in [1, V). The special token appears once at a random position followed by the
                  target token, and again at the last position, where the answer is that target. Any
                  seq_len >= 3 is valid, so evaluating at seq_len longer than training tests extrapolation.
                    inputs   5 0 3 6 2 7 0      targets . . . . . . 3
  phonebook       Repeat After Me (Jelassi et al. 2024) / the Mamba-based LM study (Waleffe et al. 2024).
                  Token 0 pads, 1 is SEP (name -> number), 2 is QUERY; names are name_len tokens from the
                  lower half of [3, V) (distinct within a book), numbers number_len tokens from the upper
                  half. The book is name SEP number per entry, then QUERY name SEP number; the answers are
                  the queried number's tokens, predicted one at a time from SEP on (teacher forcing, so
                  all-answers-correct equals a greedy decode being right).
                    s        a b 1 x y z  c d 1 u v w  2 c d 1 u v w   (inputs = s[:-1], targets = s[1:])
                    weights  only where the target is u, v, w of the query
  linear_regression  Garg et al. 2022 / Zhang, Frei & Bartlett 2023: real-valued (see below).

Regression examples (`LinearRegression`): xs [n, d] ~ N(0, I), w ~ N(0, I_d) fresh per example,
ys = xs @ w + sigma * N(0, 1). Rows are positions of a [T, d+1] real-valued read-in:
    layout=interleave (Garg et al.): T = 2n; row 2i = (x_i, 0), row 2i+1 = (0, y_i); the target at row 2i is
                      y_i (weight 1: the prediction from i in-context points), odd rows weight 0.
    layout=concat (Zhang, Frei & Bartlett): T = n; row i = (x_i, y_i) for the n-1 context points, the last
                      row (x_{n-1}, 0) is the query; one weighted target, y_{n-1}, at context length n-1.
    keys: inputs float32[T, d+1], targets float32[T], weights float32[T], segment_ids, positions int32[T], and
          the draws themselves: xs float32[n, d], ys float32[n], w float32[d].
`baselines(example_or_batch, max_k)` gives, on the same draws, the squared error of OLS (min-norm least
squares for k < d), ridge and one step of gradient descent from w = 0 (w_1 = (eta/k) X^T y, the
von Oswald / Zhang-Frei-Bartlett construction) predicting point k from the first k points, k = 0..max_k.
`context_lengths(task)` maps each position to its number of in-context points, `per_context_error` turns a
model's predictions into the same per-k curve.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from configs.schema import ConfigError

SPLITS = {"train": 0, "val": 1, "test": 2}
# A token task's batch: these keys, [B, T] each, as data/pipeline.py's (dtypes of training/step.BATCH_DTYPES).
TOKEN_KEYS = {"inputs": np.int32, "targets": np.int32, "weights": np.float32, "segment_ids": np.int32,
              "positions": np.int32}


def _fail(task, msg: str):
  raise ConfigError(f"{task.name}: {msg}")


def _positive(task, **knobs):
  for k, v in knobs.items():
    if not v > 0:
      _fail(task, f"{k}={v} must be > 0")


def _from_sequence(s: np.ndarray, answer_t: np.ndarray) -> dict:
  """s: the T+1 tokens of a next-token example -> inputs s[:-1], targets s[1:], weights on answer_t."""
  T = len(s) - 1
  w = np.zeros(T, np.float32)
  w[answer_t] = 1.0
  return {"inputs": s[:-1].astype(np.int32), "targets": s[1:].astype(np.int32), "weights": w,
          "segment_ids": np.ones(T, np.int32), "positions": np.arange(T, dtype=np.int32)}


def _with_answers(inputs: np.ndarray, answer_t: np.ndarray, answers: np.ndarray) -> dict:
  """inputs [T]; targets = the next input (0 after the last) except the answers at answer_t."""
  ex = _from_sequence(np.append(inputs, 0), answer_t)
  ex["targets"][answer_t] = answers
  return ex


# ---------------------------------------------------------------------------------------------
# The token tasks. Each is a frozen dataclass of its knobs (validated on construction, ConfigError naming
# the knob) with seq_len / vocab_size for the model and draw(rng) -> one example.

@dataclass(frozen=True)
class MQAR:
  """Zoology's multi-query associative recall (layout in the module docstring)."""
  name: ClassVar[str] = "mqar"
  vocab_size: int = 8192           # V: keys [1, V//2), values [V//2, V); noise over all of [0, V)
  num_pairs: int = 8               # key-value pairs per sequence (Zoology's num_kv_pairs)
  seq_len: int = 64                # T
  num_queries: int = 0             # keys queried (distinct, each once); 0 = all num_pairs, as Zoology
  power_a: float = 0.01            # query gaps ~ (g+1)^(power_a-1); 1.0 = uniform; Zoology's default 0.01

  def __post_init__(self):
    self.check()

  @property
  def queries(self) -> int:
    return self.num_queries or self.num_pairs

  @property
  def length(self) -> int:
    return self.seq_len

  def check(self):
    _positive(self, vocab_size=self.vocab_size, num_pairs=self.num_pairs, seq_len=self.seq_len,
              power_a=self.power_a)
    if not 0 <= self.num_queries <= self.num_pairs:
      _fail(self, f"num_queries={self.num_queries} must be in [0, num_pairs={self.num_pairs}] "
            "(each key is queried at most once; 0 = all)")
    if self.num_pairs > self.vocab_size // 2 - 1:
      _fail(self, f"num_pairs={self.num_pairs} needs vocab_size >= {2 * self.num_pairs + 2} (distinct keys "
            f"from [1, vocab_size//2)); vocab_size={self.vocab_size}")
    need = 2 * self.num_pairs + 2 * self.queries
    if self.seq_len < need:
      _fail(self, f"num_pairs={self.num_pairs} needs seq_len >= {need} (2*num_pairs for the pairs + "
            f"2*num_queries={2 * self.queries} for the queries at even gaps); seq_len={self.seq_len}")

  def draw(self, rng: np.random.Generator) -> dict:
    V, N, Q, T = self.vocab_size, self.num_pairs, self.queries, self.seq_len
    keys = 1 + rng.choice(V // 2 - 1, N, replace=False)
    values = V // 2 + rng.choice(V - V // 2, N, replace=False)
    space = (T - 2 * N) // 2
    p = np.arange(1, space + 1, dtype=np.float64) ** (self.power_a - 1)
    gaps = rng.choice(space, Q, replace=False, p=p / p.sum())
    which = rng.choice(N, Q, replace=False) if Q < N else np.arange(N)
    inputs = rng.integers(0, V, T)                      # noise everywhere, then the pairs and queries
    inputs[0:2 * N:2], inputs[1:2 * N:2] = keys, values
    query_t = 2 * N + 2 * gaps
    inputs[query_t] = keys[which]
    return _with_answers(inputs, query_t, values[which])


@dataclass(frozen=True)
class SelectiveCopy:
  """Mamba §4.1 selective copying (layout in the module docstring)."""
  name: ClassVar[str] = "selective_copy"
  NOISE: ClassVar[int] = 0
  vocab_size: int = 16             # V, noise and marker included (Mamba: 16); data tokens [1, V-1)
  num_tokens: int = 16             # data tokens to memorize (Mamba: 16)
  seq_len: int = 256               # T = the noisy region (T - num_tokens) + num_tokens markers (Mamba: 4096)

  def __post_init__(self):
    self.check()

  @property
  def marker(self) -> int:
    return self.vocab_size - 1

  @property
  def length(self) -> int:
    return self.seq_len

  def check(self):
    _positive(self, num_tokens=self.num_tokens, seq_len=self.seq_len)
    if self.vocab_size < 3:
      _fail(self, f"vocab_size={self.vocab_size} must be >= 3 (noise 0, marker vocab_size-1, data tokens)")
    if self.seq_len < 2 * self.num_tokens:
      _fail(self, f"num_tokens={self.num_tokens} needs seq_len >= {2 * self.num_tokens} (num_tokens data "
            f"positions + num_tokens markers); seq_len={self.seq_len}")

  def draw(self, rng: np.random.Generator) -> dict:
    M, T = self.num_tokens, self.seq_len
    tokens = rng.integers(1, self.vocab_size - 1, M)
    where = np.sort(rng.choice(T - M, M, replace=False))
    inputs = np.full(T, self.NOISE, np.int64)
    inputs[where] = tokens
    inputs[T - M:] = self.marker
    return _with_answers(inputs, np.arange(T - M, T), tokens)


@dataclass(frozen=True)
class InductionHeads:
  """Mamba §4.1 induction heads (layout in the module docstring).

  Any seq_len >= 3 is a valid eval length: `dataclasses.replace(task, seq_len=4 * task.seq_len)` tests
  extrapolation."""
  name: ClassVar[str] = "induction"
  SPECIAL: ClassVar[int] = 0
  vocab_size: int = 16             # V, the special token included (Mamba: 16)
  seq_len: int = 256               # T (Mamba: trained at 256, evaluated at 2^6 .. 2^20)

  def __post_init__(self):
    self.check()

  @property
  def length(self) -> int:
    return self.seq_len

  def check(self):
    if self.vocab_size < 3:
      _fail(self, f"vocab_size={self.vocab_size} must be >= 3 (the special token 0 and >= 2 others)")
    if self.seq_len < 3:
      _fail(self, f"seq_len={self.seq_len} must be >= 3 (special, target, ..., special)")

  def draw(self, rng: np.random.Generator) -> dict:
    T = self.seq_len
    s = rng.integers(1, self.vocab_size, T + 1, dtype=np.int32)
    p = rng.integers(0, T - 2)                          # the trigger; its target at p+1 <= T-2
    s[p] = s[T - 1] = self.SPECIAL
    s[T] = s[p + 1]
    return _from_sequence(s, np.array([T - 1]))


@dataclass(frozen=True)
class Phonebook:
  """Phonebook lookup (layout in the module docstring)."""
  name: ClassVar[str] = "phonebook"
  PAD: ClassVar[int] = 0
  SEP: ClassVar[int] = 1
  QUERY: ClassVar[int] = 2
  num_entries: int = 20            # (name, number) entries in the book
  name_len: int = 2                # tokens per name (names distinct within a book)
  number_len: int = 4              # tokens per number (the answer)
  vocab_size: int = 64             # V: 3 specials, names in the lower half of [3, V), numbers the upper
  seq_len: int = 0                 # T; 0 = the exact length (min_seq_len); larger pads at the end

  def __post_init__(self):
    self.check()

  @property
  def name_vocab(self) -> tuple[int, int]:
    return 3, 3 + (self.vocab_size - 3) // 2

  @property
  def number_vocab(self) -> tuple[int, int]:
    return 3 + (self.vocab_size - 3) // 2, self.vocab_size

  @property
  def min_seq_len(self) -> int:
    entry = self.name_len + 1 + self.number_len
    return self.num_entries * entry + 1 + entry - 1     # the book, QUERY name SEP number, minus the last

  @property
  def length(self) -> int:
    return self.seq_len or self.min_seq_len

  def check(self):
    _positive(self, num_entries=self.num_entries, name_len=self.name_len, number_len=self.number_len)
    if self.vocab_size < 5:
      _fail(self, f"vocab_size={self.vocab_size} must be >= 5 (PAD, SEP, QUERY, name and number tokens)")
    lo, hi = self.name_vocab
    if (hi - lo) ** self.name_len < 2 * self.num_entries:
      _fail(self, f"num_entries={self.num_entries} needs (name tokens {hi - lo})**name_len={self.name_len} "
            f">= {2 * self.num_entries} possible names; raise vocab_size or name_len")
    if self.seq_len and self.seq_len < self.min_seq_len:
      _fail(self, f"seq_len={self.seq_len} is shorter than the book: num_entries={self.num_entries}, "
            f"name_len={self.name_len}, number_len={self.number_len} need seq_len >= {self.min_seq_len} "
            "(or 0 for exactly that)")

  def draw(self, rng: np.random.Generator) -> dict:
    E, L, M = self.num_entries, self.name_len, self.number_len
    names = rng.integers(*self.name_vocab, (E, L))
    seen: set[bytes] = set()
    for e in range(E):                                  # redraw a repeated name (rare: >= 2E possible names)
      while names[e].tobytes() in seen:
        names[e] = rng.integers(*self.name_vocab, L)
      seen.add(names[e].tobytes())
    numbers = rng.integers(*self.number_vocab, (E, M))
    q = rng.integers(0, E)
    book = np.concatenate([names, np.full((E, 1), self.SEP), numbers], axis=1).reshape(-1)
    s = np.concatenate([book, [self.QUERY], names[q], [self.SEP], numbers[q]])
    T0 = len(s) - 1
    ex = _from_sequence(s, np.arange(T0 - M, T0))
    pad = self.length - T0
    if pad:
      for k, v in ex.items():
        ex[k] = np.concatenate([v, np.zeros(pad, v.dtype)])     # PAD = 0, segment 0, position 0, weight 0
    return ex


# ---------------------------------------------------------------------------------------------
# In-context linear regression.

@dataclass(frozen=True)
class LinearRegression:
  """In-context linear regression (layouts in the module docstring)."""
  name: ClassVar[str] = "linear_regression"
  d: int = 8                       # input dimension
  n: int = 32                      # points per sequence (concat: n-1 in context + the query)
  sigma: float = 0.0               # label noise: y = w.x + sigma * N(0, 1)
  layout: str = "interleave"       # interleave (Garg et al.) | concat (Zhang, Frei & Bartlett)
  ridge_lambda: float = 0.1        # the ridge baseline's lambda (Bayes-optimal for w ~ N(0, I): sigma^2)
  eta: float = 1.0                 # the 1-step GD baseline's learning rate

  LAYOUTS: ClassVar[tuple[str, ...]] = ("interleave", "concat")

  def __post_init__(self):
    self.check()

  @property
  def seq_len(self) -> int:
    return 2 * self.n if self.layout == "interleave" else self.n

  @property
  def length(self) -> int:
    return self.seq_len

  @property
  def input_dim(self) -> int:
    return self.d + 1

  def check(self):
    _positive(self, d=self.d, n=self.n, eta=self.eta)
    if self.layout not in self.LAYOUTS:
      _fail(self, f"layout={self.layout!r} is not one of {self.LAYOUTS}")
    if self.layout == "concat" and self.n < 2:
      _fail(self, f"n={self.n} must be >= 2 with layout='concat' (context points + the query)")
    if not (self.sigma >= 0 and self.ridge_lambda >= 0):
      _fail(self, f"sigma={self.sigma} and ridge_lambda={self.ridge_lambda} must be >= 0")

  def draw(self, rng: np.random.Generator) -> dict:
    d, n = self.d, self.n
    xs = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal(d).astype(np.float32)
    ys = xs.astype(np.float64) @ w + (self.sigma * rng.standard_normal(n) if self.sigma else 0.0)
    ys = ys.astype(np.float32)                          # = xs @ w to float32 rounding (sigma = 0)
    T = self.seq_len
    inputs = np.zeros((T, d + 1), np.float32)
    targets, weights = np.zeros(T, np.float32), np.zeros(T, np.float32)
    if self.layout == "interleave":
      inputs[0::2, :d] = xs
      inputs[1::2, d] = ys
      targets[0::2], weights[0::2] = ys, 1.0
    else:
      inputs[:, :d], inputs[:-1, d] = xs, ys[:-1]
      targets[-1], weights[-1] = ys[-1], 1.0
    return {"inputs": inputs, "targets": targets, "weights": weights,
            "segment_ids": np.ones(T, np.int32), "positions": np.arange(T, dtype=np.int32),
            "xs": xs, "ys": ys, "w": w}


TASKS = {t.name: t for t in (MQAR, SelectiveCopy, InductionHeads, Phonebook, LinearRegression)}


def make(name: str, **knobs):
  """The task `name` (a key of TASKS) with its knobs; ConfigError for an unknown task or knob."""
  if name not in TASKS:
    raise ConfigError(f"task {name!r} is not one of {tuple(TASKS)}")
  cls = TASKS[name]
  known = {f.name for f in dataclasses.fields(cls)}
  for k in knobs:
    if k not in known:
      raise ConfigError(f"{name}: unknown knob {k!r}; knobs: {sorted(known)}")
  return cls(**knobs)


def seq_len(task) -> int:
  """The example length T of `task` (= task.length; a Phonebook's seq_len=0 means its exact length)."""
  return task.length


# ---------------------------------------------------------------------------------------------
# Examples and batches.

def _split_id(split) -> int:
  if isinstance(split, str):
    if split not in SPLITS:
      raise ValueError(f"split={split!r} is not one of {tuple(SPLITS)}")
    return SPLITS[split]
  if not (isinstance(split, (int, np.integer)) and split >= 0):
    raise ValueError(f"split={split!r} must be a split name or an int >= 0")
  return int(split)


def rng_for(seed: int, split, i: int) -> np.random.Generator:
  """The generator of example i of a split: np.random.default_rng([seed, split_id, i])."""
  if seed < 0 or i < 0:
    raise ValueError(f"seed={seed} and index i={i} must be >= 0")
  return np.random.default_rng([int(seed), _split_id(split), int(i)])


def example(task, seed: int, split, i: int) -> dict:
  """Example i of `split`: a pure function of (task, seed, split, i)."""
  return task.draw(rng_for(seed, split, i))


def batch(task, seed: int, split, start_index: int, batch_size: int) -> dict:
  """Examples start_index .. start_index + batch_size - 1, stacked: a dict of [batch_size, ...] arrays."""
  exs = [example(task, seed, split, start_index + j) for j in range(batch_size)]
  return {k: np.stack([e[k] for e in exs]) for k in exs[0]}


class TaskExamples:
  """An index-based (grain RandomAccessDataSource-style) source: [i] = example(task, seed, split, i).

  `gather(idx)` stacks a batch, as data/pipeline.py's `Batches` expects of its examples, so
  `pipeline.Batches(TaskExamples(task, seed, split), b, n_batches, None)` gives batch k = examples
  [k*b, (k+1)*b): every batch fresh, resumable from the batch count alone."""

  def __init__(self, task, seed: int, split, size: int = sys.maxsize):
    self.task, self.seed, self.split, self.size = task, seed, split, size
    rng_for(seed, split, 0)                              # validate early

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, i: int) -> dict:
    if not 0 <= i < self.size:
      raise IndexError(i)
    return example(self.task, self.seed, self.split, int(i))

  def gather(self, idx) -> dict:
    exs = [self[int(i)] for i in np.asarray(idx).reshape(-1)]
    return {k: np.stack([e[k] for e in exs]) for k in exs[0]}


# ---------------------------------------------------------------------------------------------
# Metrics.

def accuracy(pred_ids, batch: dict) -> dict:
  """Exact match over the answer positions (weights > 0).

  pred_ids: int [B, T] (or logits [B, T, V], argmaxed). Returns {"accuracy": correct answers / answers,
  "seq_accuracy": the fraction of examples with every answer right, "correct": bool [B] per example,
  "answers": the number of answer positions}."""
  pred = np.asarray(pred_ids)
  if pred.ndim == 3:
    pred = pred.argmax(-1)
  ans = np.asarray(batch["weights"]) > 0
  hit = pred == np.asarray(batch["targets"])
  n = int(ans.sum())
  per_example = np.all(hit | ~ans, axis=-1)
  return {"accuracy": float((hit & ans).sum() / max(n, 1)), "seq_accuracy": float(per_example.mean()),
          "correct": per_example, "answers": n}


def context_lengths(task: LinearRegression) -> np.ndarray:
  """int [T]: at each weighted position, the number of in-context points before it; -1 elsewhere."""
  k = np.full(task.seq_len, -1, np.int64)
  if task.layout == "interleave":
    k[0::2] = np.arange(task.n)
  else:
    k[-1] = task.n - 1
  return k


def per_context_error(task: LinearRegression, pred_y, batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """A model's squared error per context length: (ks, mean over the batch of (pred - y)^2 at each k).
  pred_y: float [B, T] (the model's scalar read-out at every position)."""
  k = context_lengths(task)
  err = (np.asarray(pred_y, np.float64) - np.asarray(batch["targets"], np.float64)) ** 2
  ks = np.flatnonzero(k >= 0)
  return k[ks], err[..., ks].mean(axis=tuple(range(err.ndim - 1)))


def baselines(example: dict, max_k: int | None = None, *, ridge_lambda: float = 0.1,
              eta: float = 1.0) -> dict:
  """Squared error of the classical estimators on the same draws, per context length k = 0..max_k.

  Each predicts y_k from x_k and the first k points (X = xs[:k], y = ys[:k]); k = 0 predicts 0.
    ols    least squares; for k < d the minimum-norm solution (pinv)
    ridge  (X^T X + ridge_lambda I)^-1 X^T y  (ridge_lambda -> 0: ols)
    gd     one gradient step on (1/2k) |X w - y|^2 from w = 0: w_1 = (eta/k) X^T y
    zero   predicting 0 (Garg et al.'s normaliser: its error is |w|^2 + sigma^2 on average)
  `example`: one example (xs [n, d]) or a batch (xs [B, n, d]). Returns {"k": int [K], name: float [.., K]}
  with K = max_k + 1 and max_k <= n - 1 (default n - 1). Use the task's knobs:
  baselines(ex, ridge_lambda=task.ridge_lambda, eta=task.eta)."""
  xs = np.asarray(example["xs"], np.float64)
  ys = np.asarray(example["ys"], np.float64)
  n, d = xs.shape[-2:]
  max_k = n - 1 if max_k is None else max_k
  if not 0 <= max_k <= n - 1:
    raise ValueError(f"max_k={max_k} must be in [0, n-1={n - 1}] (point max_k is the query)")
  out = {name: np.zeros(xs.shape[:-2] + (max_k + 1,)) for name in ("ols", "ridge", "gd", "zero")}
  eye = np.eye(d)
  for k in range(max_k + 1):
    X, y, xq, yq = xs[..., :k, :], ys[..., :k], xs[..., k, :], ys[..., k]
    out["zero"][..., k] = yq ** 2
    if k == 0:
      for name in ("ols", "ridge", "gd"):
        out[name][..., k] = yq ** 2
      continue
    Xty = np.einsum("...kd,...k->...d", X, y)
    w_ols = np.einsum("...dk,...k->...d", np.linalg.pinv(X), y)
    if ridge_lambda > 0:
      w_ridge = np.linalg.solve(np.einsum("...kd,...ke->...de", X, X) + ridge_lambda * eye, Xty[..., None])[..., 0]
    else:
      w_ridge = w_ols
    w_gd = eta / k * Xty
    for name, wh in (("ols", w_ols), ("ridge", w_ridge), ("gd", w_gd)):
      out[name][..., k] = (np.einsum("...d,...d->...", xq, wh) - yq) ** 2
  out["k"] = np.arange(max_k + 1)
  return out


# ---------------------------------------------------------------------------------------------
# describe(): every task's layout on a live tiny example.

TINY = (MQAR(vocab_size=16, num_pairs=2, seq_len=12, power_a=1.0),
        SelectiveCopy(vocab_size=8, num_tokens=3, seq_len=12),
        InductionHeads(vocab_size=8, seq_len=10),
        Phonebook(num_entries=2, name_len=2, number_len=2, vocab_size=13),
        LinearRegression(d=2, n=3))


def describe(task=None) -> str:
  """`task`'s layout (default: every task at a tiny size) on a live example: train example 0 of seed 0.
  Token tasks print inputs and, under them, the targets at the answer positions ('.' elsewhere)."""
  todo = [task] if task is not None else TINY
  lines = []
  for t in todo:
    ex = example(t, 0, "train", 0)
    lines.append(f"{t.name}: {type(t).__doc__.splitlines()[0]}")
    lines.append(f"  {t!r}, T={seq_len(t)}")
    if isinstance(t, LinearRegression):
      lines.append(f"  w = {np.array2string(ex['w'], precision=2, suppress_small=True)}")
      for r in range(len(ex["inputs"])):
        tgt = f"  target {ex['targets'][r]:+.2f}" if ex["weights"][r] else ""
        lines.append(f"  row {r}: {np.array2string(ex['inputs'][r], precision=2, suppress_small=True)}{tgt}")
      continue
    width = max(len(str(v)) for v in np.concatenate([ex["inputs"], ex["targets"]])) + 1
    answers = np.where(ex["weights"] > 0, ex["targets"].astype(str), ".")
    lines.append("  inputs " + "".join(f"{x:>{width}}" for x in ex["inputs"]))
    lines.append("  targets" + "".join(f"{x:>{width}}" for x in answers))
  return "\n".join(lines)
