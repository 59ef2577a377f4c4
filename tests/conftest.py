"""Test-session setup, before JAX initialises its backends (hence at import of conftest):

- 8 forced host devices, so sharding is really exercised;
- LLVM optimisation off: test programs are tiny and compile-bound; this halves compile time and does
  not change XLA's HLO-level decisions (fusion, sharding, buffer assignment).
"""
import os

for _flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
