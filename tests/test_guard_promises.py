"""Issue #20's guard promises, one test each, named by the promise: nothing non-finite is kept as
good, bad hyperparameters and config files are refused in one line before anything compiles, and a
full disk while writing the tokenizer is one line that leaves no half-written file. Direct calls and
early exits only: nothing here trains."""
import contextlib
import math
import resource
import signal
from dataclasses import replace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_bad_input import TINY, cli

import modelzoo
from configs import base
from configs.base import ConfigError
from data import tokenize
from training import platform_cpu
from training import step as step_lib

# ---------------------------------------------------------------------------------------------
# Nothing non-finite is kept as good: the step's guard sees the updated parameters and moments.

SMALL = ["model.d_model=8", "model.n_layers=1", "model.n_heads=1", "model.d_ff=8",
         "model.vocab_size=16", "model.max_len=16", "model.scan_layers=false",
         "model.attn_impl=xla", "model.tie_embeddings=false", "data.seq_len=8",
         "train.batch_size=4", "train.warmup_steps=0", "mesh.data=1"]


def nan_moments():
  """An optimizer whose updates are zero but whose state turns NaN: only the state shows it."""
  def update(grads, acc, params=None):
    return jax.tree.map(jnp.zeros_like, grads), jax.tree.map(lambda a: a + jnp.nan, acc)
  return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), update)


def one_step(tx, overrides=()):
  """(state before, state after, metrics) of one train step with optimizer `tx`, on one device.
  Tokens 0..7 of 16 and 8 of 16 positions: the other rows of the (untied) token and position
  tables get exactly zero gradient, which Adam with eps=0 turns into 0/0 = NaN."""
  cfg = base.load("configs/quickstart.py", SMALL + list(overrides))
  model = modelzoo.build(cfg.model)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))["params"]
  zero = jnp.zeros((), jnp.int32)
  state = step_lib.TrainState(step=zero, params=params, buffers={}, opt_state=tx.init(params),
                              rng=jax.random.PRNGKey(0), bad_steps=zero, skipped=zero)
  x = np.random.default_rng(0).integers(0, 8, (4, 9)).astype(np.int32)
  batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "weights": np.ones((4, 8), np.float32),
           "segment_ids": np.ones((4, 8), np.int32),
           "positions": np.broadcast_to(np.arange(8, dtype=np.int32), (4, 8))}
  schedule = optax.constant_schedule(1e-3)
  new, m = jax.jit(step_lib.make_train_step(model, tx, schedule, cfg))(state, batch)
  return jax.device_get(state), jax.device_get(new), jax.device_get(m)


def assert_bitwise(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("how", ["eps=0", "NaN moments"])
def test_non_finite_parameters_are_never_saved_as_good(how):
  """train.eps=0 (what train.lr=inf and train.clip_norm=nan did too, now refused) turns parameters
  NaN while loss and grad norm stay finite: the step must skip that update, count it, and leave
  parameters and Adam moments bitwise unchanged, so the state exit 3 saves is the last good one.
  eps=0 runs with 2 micro-batches: the guard holds under gradient accumulation too."""
  t = base.load("configs/quickstart.py", SMALL).train
  if how == "eps=0":
    old, new, m = one_step(step_lib.make_optimizer(replace(t, eps=0.0))[0],   # replace(): no
                           ["train.grad_accum=2"])                            # validation
  else:
    old, new, m = one_step(nan_moments())
  assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]), m
  assert m["skipped"] == 1 and m["nonfinite_state"] == 1, m
  assert int(new.bad_steps) == 1 and int(new.skipped) == 1 and int(new.step) == 1
  assert_bitwise(new.params, old.params)
  assert_bitwise(new.opt_state, old.opt_state)


def test_the_finite_check_never_overflows_on_large_finite_values():
  """No false alarm: a sum of squares of float32 values near their max is inf, so the check is per
  element; integer leaves (Adam's count) are not checked. (A false alarm in the step itself would
  freeze every training run: the end-to-end tests' losses would not fall.)"""
  big = {"w": jnp.full((4,), 3e38, jnp.float32), "b": jnp.full((2,), 6e4, jnp.bfloat16),
         "count": jnp.array(7, jnp.int32)}
  assert bool(step_lib.all_finite(big))
  assert not bool(step_lib.all_finite({**big, "b": big["b"].at[1].set(jnp.inf)}))


# ---------------------------------------------------------------------------------------------
# Hyperparameters: finite and in range, refused in one line naming the key before compiling.

BAD_HYPERPARAMETERS = [
    "train.eps=0", "train.eps=-1e-8", "train.eps=nan", "train.b1=1.5", "train.b1=-0.1",
    "train.b1=1", "train.b2=1", "train.b2=nan", "train.lr=inf", "train.lr=nan", "train.min_lr=nan",
    "train.min_lr=inf", "train.clip_norm=nan", "train.clip_norm=inf", "train.weight_decay=nan",
    "train.weight_decay=inf", "train.z_loss=inf", "train.z_loss=-1", "model.init_std=nan",
    "model.norm_eps=inf", "model.norm_eps=0",
]


@pytest.mark.parametrize("override", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_refused_before_compile(override, tmp_path, capsys):
  key, value = override.split("=")
  rc, out, err = cli(capsys, tmp_path / "run", override)
  assert rc == 2, (override, err, out[-2000:])
  assert err.startswith(f"error: {key}={float(value)}") and err.count("\n") == 1, err
  assert "Traceback" not in err + out and "compiled in" not in out
  assert not (tmp_path / "run").exists()       # refused before the workdir was touched


def test_good_hyperparameters_at_their_bounds_are_accepted():
  t = base.TrainConfig(b1=0.0, b2=0.0, clip_norm=0.0, weight_decay=0.0, z_loss=0.0, min_lr=0.0)
  base.validate(base.Config(train=t), 1)


def test_range_declarations_refuse_nan_and_infinity():
  """positive/nonneg refuse NaN (which compares False both ways) as well as out-of-range values."""
  for bad in (math.nan, math.inf, -math.inf):
    with pytest.raises(ConfigError):
      base.check_fields(base.TrainConfig(min_lr=bad), "train")


# ---------------------------------------------------------------------------------------------
# A config file that cannot be loaded: one line naming the file and the problem, exit 2.

CONFIG_FILES = {
    "syntax error": ("def get_config(:\n  pass\n", ["my_config.py:1: SyntaxError: "]),
    "raises on import": ("import os\nimport no_such_module_xyz\n",
                         ["my_config.py:2: ModuleNotFoundError: ", "no_such_module_xyz"]),
    "get_config raises": ("def get_config():\n  return 1 / 0\n",
                          ["my_config.py:2: ZeroDivisionError: division by zero"]),
    "get_config returns a dict": ("def get_config():\n  return {'train': {}}\n",
                                  ["get_config() returned a dict, not a configs.base.Config"]),
    "get_config returns None": ("def get_config():\n  pass\n",
                                ["get_config() returned None, not a configs.base.Config"]),
    "no get_config": ("X = 1\n", ["defines no get_config()"]),
}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_file_errors_are_one_line(name, tmp_path, capsys):
  text, words = CONFIG_FILES[name]
  f = tmp_path / "my_config.py"
  f.write_text(text)
  rc, out, err = cli(capsys, tmp_path / "run", config=str(f))
  assert rc == 2, (name, err, out[-2000:])
  assert err.startswith(f"error: --config {str(f)!r}") and err.count("\n") == 1, err
  for w in words:
    assert w in err, (w, err)
  assert "Traceback" not in err + out


# ---------------------------------------------------------------------------------------------
# A config.json of the wrong shape: from_dict raises ConfigError naming the key.

GOOD = base.to_dict(base.load("configs/quickstart.py", TINY))
MALFORMED = {
    "a list": ([], "config.json holds a list, not a dict of sections"),
    "null": (None, "config.json holds None, not a dict of sections"),
    "model is a number": ({"model": 3}, "config.json section 'model' is 3"),
    "train is a list": ({"train": [1]}, "config.json section 'train' is [1]"),
    "string for a float": ({"train": {"lr": "abc"}}, "train.lr='abc' in config.json"),
    "float for an int": ({"train": {"steps": 1.5}}, "train.steps=1.5 in config.json"),
    "string for a bool": ({"data": {"pack": "yes"}}, "data.pack='yes' in config.json"),
    "model field": ({"model": {**GOOD["model"], "d_model": "wide"}},
                    "model.d_model='wide' in config.json"),
    "model name": ({"model": {"name": 7}}, "model.name=7 in config.json"),
    "model name a list": ({"model": {"name": ["decoder"]}},
                          "model.name=['decoder'] in config.json"),
    "null for a string": ({"data": {"path": None}}, "data.path=None in config.json"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_config_json_is_one_line(name):
  d, words = MALFORMED[name]
  with pytest.raises(ConfigError) as e:
    base.from_dict(d)
  assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_well_formed_config_json_still_loads():
  assert base.to_dict(base.from_dict(GOOD)) == GOOD
  ints_for_floats = {**GOOD, "train": {**GOOD["train"], "lr": 1, "min_lr": 0}}   # JSON's 1, not 1.0
  t = base.from_dict(ints_for_floats).train
  assert (t.lr, t.min_lr) == (1.0, 0.0) and isinstance(t.lr, float)


# ---------------------------------------------------------------------------------------------
# A full disk while writing the tokenizer: one line naming the file, nothing half-written.

@contextlib.contextmanager
def file_size_limit(limit: int):
  """Writes past `limit` bytes fail with EFBIG (File too large) as a full disk fails with ENOSPC."""
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def many_chars(n: int) -> str:
  return "".join(chr(0x4E00 + i) for i in range(n))      # CJK: 3 bytes each in UTF-8


def test_full_disk_while_writing_the_tokenizer_is_one_line(tmp_path, capsys):
  small = tokenize.CharTokenizer(sorted("abc"))
  small.save(tmp_path)
  before = (tmp_path / tokenize.FILENAME).read_bytes()
  big = tokenize.CharTokenizer(many_chars(4000))            # ~28 KB of JSON
  with file_size_limit(16 * 1024), pytest.raises(ConfigError) as e:
    big.save(tmp_path)
  msg = str(e.value)
  assert str(tmp_path / tokenize.FILENAME) in msg and "File too large" in msg, msg
  assert "\n" not in msg
  assert sorted(p.name for p in tmp_path.iterdir()) == [tokenize.FILENAME]   # no temp file left
  assert (tmp_path / tokenize.FILENAME).read_bytes() == before               # the old one intact

  # Through train.py: config.json (~4 KB) fits under the limit, the tokenizer (~28 KB) does not.
  text = tmp_path / "wide.txt"
  text.write_text((many_chars(4000) + "\n") * 3, encoding="utf-8")
  platform_cpu.start()            # the C++ kernel's build (if not cached) is not what we limit
  run = tmp_path / "run"
  with file_size_limit(16 * 1024):
    rc, out, err = cli(capsys, run, "data.tokenizer=char", "model.vocab_size=4096", data=str(text))
  assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err + out, err
  assert f"{run / tokenize.FILENAME}" in err and "File too large" in err, err
  assert not any(p.name.startswith(tokenize.FILENAME) for p in run.iterdir())
  assert "compiled in" not in out

