"""Test-session setup, before JAX initialises its backends (hence at import of conftest):

- 8 forced host devices, so sharding is really exercised;
- LLVM optimisation off: test programs are tiny and compile-bound; this halves compile time and does
  not change XLA's HLO-level decisions (fusion, sharding, buffer assignment);
- JAX's persistent compilation cache (env vars, so subprocesses share it): a program compiled
  by one test, by the default run or by the slow run is read back instead of compiled again.
  SEQZOO_TEST_CACHE= (empty) turns it off.

Shared fixtures live here: `corpus`, a small text file with learnable structure.
"""
import os
from pathlib import Path

import numpy as np
import pytest

for _flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_cache = os.environ.get("SEQZOO_TEST_CACHE",
                        str(Path.home() / ".cache" / "seqzoo" / "jax-test-compilation-cache"))
if _cache:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
  """~60 KB of pseudo-English with learnable structure (a small vocabulary of words)."""
  rng = np.random.default_rng(0)
  words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "its", "home", "."]
  f = tmp_path_factory.mktemp("data") / "corpus.txt"
  f.write_text(" ".join(rng.choice(words, 12000)) + "\n")
  return str(f)
