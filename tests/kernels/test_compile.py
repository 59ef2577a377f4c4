"""Every Pallas kernel compiled for one real chip from this CPU host: Mosaic for a TPU v5e,
Triton + ptxas for an H100. Lowering only builds the kernel's IR; these run the real
compilers (libtpu, the CUDA plugin), which reject things lowering accepts (e.g. a bf16 load
at an unaligned sublane offset).

Model-like shapes, float32 and bfloat16, forward and forward+backward (value and gradient of
the summed output) through the public API with impl="pallas". Each test checks that the
compiled HLO still calls the kernels (tpu_custom_call / the Triton custom call), so a
silent fallback to the XLA path fails. Without libtpu / the CUDA plugin the tests skip.
"""
import functools
import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import topologies

import kernels

# Compile-only: no TPU is opened, so let several processes (parallel test runs) load libtpu;
# otherwise the second one fails on libtpu's lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
H100_TARGET = pathlib.Path(__file__).resolve().parents[2] / "training/targets/h100_sxm.txtpb"


def _installed(module):
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:         # a parent package ("nvidia") is missing
    return False


@functools.cache
def tpu_device():
  """One v5e chip of a compile-only topology (libtpu needs no TPU for that)."""
  if not _installed("libtpu"):
    pytest.skip("libtpu is not installed: pip install -e '.[tpu]'")
  topo = topologies.get_topology_desc(platform="tpu", topology_name="v5e:1x1",
                                      chips_per_host_bounds=(1, 1, 1))
  return topo.devices[0]


@functools.cache
def h100_device():
  """One H100 of a compile-only topology described by the target config."""
  for mod in ("jax_cuda12_plugin", "nvidia.cuda_nvcc"):
    if not _installed(mod):
      pytest.skip(f"{mod} is not installed: pip install -e '.[gpu-aot]'")
  if not H100_TARGET.exists():
    pytest.skip(f"no GPU target config at {H100_TARGET}")
  topo = topologies.get_topology_desc(platform="cuda", topology="1x1x1",
                                      target_config=H100_TARGET.read_text())
  return topo.devices[0]


PLATFORMS = {"tpu": (tpu_device, "tpu_custom_call"),
             "cuda": (h100_device, "__gpu$xla.gpu.triton")}


def _attention(B, T, H, K, D):
  def make(dt):
    q, kv = (B, T, H, D), (B, T, K, D)
    return (q, dt), (kv, dt), (kv, dt)
  return make, lambda q, k, v: kernels.attention(q, k, v, impl="pallas")


def _sigmoid_attention(B, T, H, K, D):
  make, _ = _attention(B, T, H, K, D)
  return make, lambda q, k, v: kernels.sigmoid_attention(q, k, v, impl="pallas")


def _delta_rule(B, T, H, K, gated):
  def make(dt):                       # beta and the log-decay g stay f32, as in layers/deltanet
    qk = ((B, T, H, K), dt)
    gates = (((B, T, H), jnp.float32),) * (2 if gated else 1)
    return (qk, qk, qk) + gates
  return make, lambda *a: kernels.delta_rule(*a, impl="pallas")[0]


def _ssd(B, T, H, P, G, N, chunk):
  def make(dt):                       # dt and A f32, as in layers/ssm.Mamba2
    return (((B, T, H, P), dt), ((B, T, H), jnp.float32), ((H,), jnp.float32),
            ((B, T, G, N), dt), ((B, T, G, N), dt))
  return make, lambda *a: kernels.ssd(*a, chunk_size=chunk, impl="pallas")[0]


def _selective_scan(B, T, D, N):
  def make(dt):                       # A f32, as in layers/ssm.Mamba
    return (((B, T, D), dt), ((B, T, D), dt), ((D, N), jnp.float32), ((B, T, N), dt),
            ((B, T, N), dt))
  return make, lambda *a: kernels.selective_scan(*a, impl="pallas")[0]


# name -> (case, distinct kernels in the forward, in forward+backward). The compiled HLO may hold
# more calls (the delta rule's backward re-runs its forward kernel; XLA:GPU merges the two).
KERNELS = {
    "attention": (_attention(2, 1024, 8, 8, 64), 1, 3),
    "attention_gqa": (_attention(2, 1024, 8, 2, 128), 1, 3),
    "sigmoid_attention": (_sigmoid_attention(2, 1024, 8, 2, 64), 1, 3),
    "delta_rule": (_delta_rule(2, 1024, 4, 128, gated=False), 2, 3),
    "gated_delta_rule": (_delta_rule(2, 1024, 4, 128, gated=True), 2, 3),
    "ssd": (_ssd(2, 1024, 8, 64, 1, 64, 128), 1, 2),
    "selective_scan": (_selective_scan(2, 1024, 512, 16), 1, 2),
}
# Triton compiles of the delta rule take 10-40 s each (the others 0.2-10 s): slow suite only.
# GQA is the same kernel as attention with other index maps: slow suite only too.
GPU_SLOW = ("delta_rule", "gated_delta_rule", "attention_gqa")


def compile_kernel(platform, name, dtype, mode):
  """Compiles for one device of `platform`; returns the compiled HLO text."""
  device_fn, _ = PLATFORMS[platform]
  sharding = jax.sharding.SingleDeviceSharding(device_fn())
  (make, fn), _, _ = KERNELS[name]
  args = [jax.ShapeDtypeStruct(shape, dt, sharding=sharding) for shape, dt in make(dtype)]
  if mode == "fwd+bwd":
    # value_and_grad: with grad alone XLA drops a forward kernel whose output the backward
    # does not read (sigmoid attention, the delta rule's chunk kernel).
    out = fn
    fn = jax.value_and_grad(lambda *a: jnp.sum(out(*a).astype(jnp.float32)),
                            argnums=range(len(args)))
  return jax.jit(fn).lower(*args).compile().as_text()


def _cases():
  """Default suite (~20-45 s on the shared 2 cores): fwd+bwd (it compiles the forward kernels too)
  of every kernel but GQA in both dtypes on TPU (~1-3 s each), bf16 fwd+bwd on GPU but GPU_SLOW.
  The rest is marked slow."""
  for platform in PLATFORMS:
    for name in KERNELS:
      for dtype in ("float32", "bfloat16"):
        for mode in ("fwd", "fwd+bwd"):
          fast = mode == "fwd+bwd" and name != "attention_gqa" and (
              platform == "tpu" or (dtype == "bfloat16" and name not in GPU_SLOW))
          yield pytest.param(platform, name, dtype, mode, marks=() if fast else pytest.mark.slow,
                             id=f"{platform}-{name}-{dtype}-{mode}")


@pytest.mark.parametrize("platform,name,dtype,mode", list(_cases()))
def test_compiles(platform, name, dtype, mode):
  _, target = PLATFORMS[platform]
  _, n_fwd, n_bwd = KERNELS[name]
  text = compile_kernel(platform, name, jnp.dtype(dtype), mode)
  assert text.count(target) >= (n_fwd if mode == "fwd" else n_bwd), "kernel calls missing"
