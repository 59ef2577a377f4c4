"""Test-session setup: 8 forced host devices so sharding is really exercised.

XLA_FLAGS must be set before JAX initialises its backends, hence at import of conftest.
"""
import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
