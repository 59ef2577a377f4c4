"""Softmax attention: the oracle vs jax.nn.dot_product_attention and an explicit mask loop; the
blockwise jnp path, the C++ CPU kernel and the Pallas kernels (interpreted) vs the oracle; which
calls "auto" gives the CPU kernel; TPU/CUDA lowering.

Compile time dominates on CPU (an interpreted Pallas fwd+bwd compiles in seconds and runs in
milliseconds), so there are few cases, each packing several features: GQA with odd head counts,
ragged lengths, T != S (bottom-right causal), window, segments, softcap, rows that see no key.
"""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kernels import attention
from kernels._attn_common import Spec
from kernels.attention import api, cpu, pallas_gpu, pallas_tpu
from kernels.attention.reference import blockwise, naive

BACKENDS = {"tpu": pallas_tpu, "gpu": pallas_gpu}
# Small blocks so every case spans several q and KV blocks (TPU: bq % 8, bk % 128; GPU: 2^n >= 16).
BLOCKS = {"tpu": (64, 128), "gpu": (32, 64)}

# (B, T, S, H, K, D, causal, window, softcap)
PACKED = (2, 200, 260, 6, 2, 24, True, 100, 20.0)   # GQA G=3, D not 2^n, T != S, all masks
MQA_ODD = (1, 150, 150, 3, 1, 16, True, None, None)  # MQA, 3 heads, ragged
ONE_TOKEN = (1, 1, 70, 5, 5, 16, False, None, None)  # T = 1, non-causal, 5 heads


def make_inputs(B, T, S, H, K, D, dtype=jnp.float32, seed=0):
  """q, k, v and a cotangent w for o (numpy RNG: no per-shape compiles)."""
  rng = np.random.default_rng(seed)
  shapes = [(B, T, H, D), (B, S, K, D), (B, S, K, D), (B, T, H, D)]
  return tuple(jnp.asarray(rng.standard_normal(sh, np.float32)).astype(dtype) for sh in shapes)


def make_segments(B, T, S, hole=False):
  """Packed documents of ~90 tokens, ids aligned with absolute positions (query i sits at key
  i + S - T). With hole=True the first 3 queries of batch 0 get an id no key has."""
  kv = (np.arange(S)[None] + 40 * np.arange(B)[:, None]) // 90
  q = kv[:, S - T:].copy()
  if hole:
    q[0, :3] = 999
  return jnp.asarray(q, jnp.int32), jnp.asarray(kv, jnp.int32)


def spec_of(case):
  B, T, S, H, K, D, causal, window, softcap = case
  return Spec("softmax", causal, window, D ** -0.5, softcap, 0.0, T, S)


def fwd_vjp(fn):
  """jit((q,k,v), segs, w) -> (o, (dq, dk, dv)) for the loss sum(o * w)."""
  def f(qkv, segs, w):
    o, vjp = jax.vjp(lambda *a: fn(*a, *segs), *qkv)
    return o, vjp(w.astype(o.dtype))
  return jax.jit(f)


def oracle(spec, qkv, segs, w):
  """The materialised attention in float64 on the same (already rounded) inputs."""
  with jax.enable_x64(True):
    f64 = lambda t: tuple(jnp.asarray(np.asarray(a, np.float64)) for a in t)
    out = fwd_vjp(lambda q, k, v, *s: naive(q, k, v, spec, *s))(f64(qkv), segs, f64([w])[0])
    return jax.tree.map(np.asarray, out)


def assert_close(got, want, rtol, what=""):
  """Max error relative to the largest magnitude of the reference, per array."""
  for name, g, w in zip(("o", "dq", "dk", "dv"), jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape, (what, name, g.shape, w.shape)
    err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30)
    assert err <= rtol, f"{what} {name}: relative error {err:.2e} > {rtol:.0e}"


def visible_loop(T, S, causal, window, q_seg, kv_seg):
  """The documented mask rule, written out with Python loops (independent of `visible`)."""
  B = q_seg.shape[0]
  m = np.zeros((B, T, S), bool)
  for b in range(B):
    for i in range(T):
      for j in range(S):
        ok = q_seg[b, i] == kv_seg[b, j]
        if causal:
          ok &= j <= i + (S - T)
        if window is not None:
          ok &= j > i + (S - T) - window
        m[b, i, j] = ok
  return m


def test_oracle_and_xla_path_match_dot_product_attention():
  B, T, S, H, K, D, causal, window, _ = PACKED
  q, k, v, _ = make_inputs(B, T, S, H, K, D)
  q_seg, kv_seg = make_segments(B, T, S, hole=True)
  mask = visible_loop(T, S, causal, window, np.asarray(q_seg), np.asarray(kv_seg))
  want = jax.jit(jax.nn.dot_product_attention)(q, k, v, mask=jnp.asarray(mask)[:, None])
  seen = mask.any(-1)   # [B,T]: dot_product_attention is undefined on rows that see nothing
  assert (~seen).any() and seen.any()
  spec = spec_of(PACKED[:8] + (None,))
  for ours in [lambda *a: naive(*a[:3], spec, *a[3:]),
               lambda *a: attention(*a[:3], window=window, segment_ids=a[3:], impl="xla")]:
    got = np.asarray(jax.jit(ours)(q, k, v, q_seg, kv_seg))
    np.testing.assert_allclose(got[seen], np.asarray(want)[seen], atol=2e-6)
    assert np.all(got[~seen] == 0)
  # without segments, T == S: causal=True is is_causal (MQA, odd head count)
  q, k, v, _ = make_inputs(*MQA_ODD[:6])
  got = jax.jit(lambda *a: attention(*a, impl="xla"))(q, k, v)
  want = jax.jit(lambda *a: jax.nn.dot_product_attention(*a, is_causal=True))(q, k, v)
  np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize("case", [PACKED, ONE_TOKEN])
def test_blockwise_matches_oracle_float64(case):
  spec = spec_of(case)
  with jax.enable_x64(True):
    q, k, v, w = make_inputs(*case[:6], dtype=jnp.float64)
    segs = make_segments(*case[:3], hole=True) if case is PACKED else (None, None)
    f = fwd_vjp(lambda q, k, v, *s: blockwise(q, k, v, spec, *s, block_q=32, block_k=48))
    got = f((q, k, v), segs, w)
    assert_close(got, oracle(spec, (q, k, v), segs, w), 1e-12, "blockwise")
    assert all(np.isfinite(g).all() for g in got[1])


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize("case", [PACKED, MQA_ODD, ONE_TOKEN])
def test_pallas_matches_oracle_float32(backend, case):
  spec = spec_of(case)
  qkv_w = make_inputs(*case[:6])
  kernel = fwd_vjp(lambda *a: api.pallas(BACKENDS[backend], spec, BLOCKS[backend], True, *a))
  segs = make_segments(*case[:3], hole=True) if case is PACKED else (None, None)
  o, grads = kernel(qkv_w[:3], segs, qkv_w[3])
  assert_close((o, grads), oracle(spec, qkv_w[:3], segs, qkv_w[3]), 1e-5, backend)
  if case is PACKED:   # the segment hole: batch 0 rows 0-2 see no key -> exactly 0, finite grads
    assert np.all(np.asarray(o)[0, :3] == 0) and all(np.isfinite(g).all() for g in grads)


# (B, T, S, H, K, D, causal): the shakespeare_char layer; GQA with S > 64 keys not a multiple of 8;
# T > S causal (rows 0-19 see no key); MQA, non-causal, D = 128; T = 1.
CPU_CASES = [(2, 64, 64, 4, 4, 32, True), (1, 100, 130, 4, 2, 64, True), (2, 50, 30, 2, 2, 8, True),
             (1, 70, 90, 3, 1, 128, False), (1, 1, 70, 5, 5, 16, False)]


@pytest.mark.parametrize("case", CPU_CASES)
def test_cpu_kernel_matches_oracle_float32(case):
  assert cpu.load(), "the CPU kernel builds (g++)"
  spec = Spec("softmax", case[6], None, case[5] ** -0.5, None, 0.0, case[1], case[2])
  qkv_w = make_inputs(*case[:6])
  o, grads = fwd_vjp(lambda q, k, v, *s: cpu.attention(spec, q, k, v))(qkv_w[:3], (None, None),
                                                                      qkv_w[3])
  assert_close((o, grads), oracle(spec, qkv_w[:3], (None, None), qkv_w[3]), 1e-5, "cpu")
  if case[1] > case[2]:   # rows that see no key: exactly 0, finite gradients
    assert np.all(np.asarray(o)[:, :case[1] - case[2]] == 0)
    assert all(np.isfinite(g).all() for g in grads)


def test_auto_gives_the_cpu_kernel_only_what_it_covers():
  assert cpu.load()            # what the CPU platform's start-up does (training/platform_cpu.py)
  q, k, v, _ = make_inputs(2, 24, 24, 4, 2, 16)
  seg = jnp.zeros((2, 24), jnp.int32)

  def targets(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    return {t for t in (cpu.FWD, cpu.BWD) if t in text}

  loss = lambda q, k, v: attention(q, k, v).sum()
  assert targets(lambda *a: attention(*a, causal=False), q, k, v) == {cpu.FWD}
  assert targets(jax.grad(loss, argnums=(0, 1, 2)), q, k, v) == {cpu.FWD, cpu.BWD}
  for what, fn, args in [
      ("impl=xla", lambda *a: attention(*a, impl="xla"), (q, k, v)),
      ("bfloat16", attention, tuple(x.astype(jnp.bfloat16) for x in (q, k, v))),
      ("segment ids", lambda *a: attention(*a[:3], segment_ids=a[3]), (q, k, v, seg)),
      ("window", lambda *a: attention(*a, window=8), (q, k, v)),
      ("softcap", lambda *a: attention(*a, softcap=5.0), (q, k, v)),
      ("head_dim 12", attention, make_inputs(1, 8, 8, 2, 2, 12)[:3])]:
    assert not targets(fn, *args), what
  mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
  with jax.set_mesh(mesh):   # XLA would replicate a custom call's operands: the jnp path instead
    assert not targets(attention, q, k, v)
  # vmapped: the kernel runs once per vmapped slice
  qkv = [jnp.stack([x, 2 * x]) for x in (q, k, v)]
  assert targets(jax.vmap(attention), *qkv) == {cpu.FWD}
  got = jax.jit(jax.vmap(attention))(*qkv)
  want = jax.vmap(lambda *a: attention(*a, impl="xla"))(*qkv)
  np.testing.assert_allclose(got, want, atol=3e-6)


_TRACE_ONLY = """
import jax, jax.numpy as jnp
from kernels import attention
from kernels.attention import cpu
q = jnp.ones((1, 16, 2, 16), jnp.float32)
hlo = lambda: jax.jit(lambda *a: attention(*a)).lower(q, q, q).as_text()   # untraced each time
print(cpu.FWD in hlo(), cpu.loaded(), cpu.load(), cpu.FWD in hlo())
"""


def test_tracing_never_builds_the_cpu_kernel(tmp_path):
  # A fresh process with an empty kernel cache: tracing "auto" takes the jnp path and builds
  # nothing; after load() (the CPU platform's start-up) the same trace calls the kernel.
  env = {**os.environ, "SEQZOO_CACHE": str(tmp_path), "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-c", _TRACE_ONLY], env=env, capture_output=True, text=True,
                     timeout=300, cwd=Path(__file__).resolve().parents[2])
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.split() == ["False", "False", "True", "True"], r.stdout


def test_cpu_kernel_build_names_a_missing_compiler_and_caches(tmp_path):
  with pytest.raises(RuntimeError, match="no-such-c[+][+]"):
    cpu.build("no-such-c++", tmp_path / "a")
  so = cpu.build("g++", tmp_path / "b")
  stamp = so.stat().st_mtime_ns
  assert cpu.build("g++", tmp_path / "b") == so and so.stat().st_mtime_ns == stamp
  assert [p.name for p in (tmp_path / "b").iterdir()] == [so.name]   # no build leftovers


@pytest.mark.parametrize("backend", ["tpu", "gpu", "xla"])
def test_bfloat16_inputs(backend):
  """bf16 q, k, v (dots in bf16, f32 accumulation) against the f32 oracle on the same values."""
  case = MQA_ODD
  spec = spec_of(case)
  qkv_w = make_inputs(*case[:6], dtype=jnp.bfloat16)
  if backend == "xla":
    kernel = fwd_vjp(lambda q, k, v, *s: blockwise(q, k, v, spec, *s, block_q=16, block_k=32))
  else:
    kernel = fwd_vjp(lambda *a: api.pallas(BACKENDS[backend], spec, BLOCKS[backend], True, *a))
  o, grads = kernel(qkv_w[:3], (None, None), qkv_w[3])
  assert o.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
  assert_close((o, grads), oracle(spec, qkv_w[:3], (None, None), qkv_w[3]), 3e-2, backend)


@pytest.mark.parametrize("impl", ["xla", "tpu", "gpu"])
def test_check_grads_float64(impl):
  case = (1, 20, 28, 2, 1, 8, True, 12, 5.0)
  spec = spec_of(case)
  with jax.enable_x64(True):
    q, k, v, _ = make_inputs(*case[:6], dtype=jnp.float64)
    if impl == "xla":
      fn = lambda q, k, v: blockwise(q, k, v, spec, block_q=8, block_k=8)
    else:
      blocks = (8, 128) if impl == "tpu" else (16, 16)
      fn = lambda q, k, v: api.pallas(BACKENDS[impl], spec, blocks, True, q, k, v, None, None)
    check_grads(jax.jit(fn), (q, k, v), order=1, modes=("rev",))


def test_logit_scale_traced_and_static():
  q, k, v, _ = make_inputs(1, 12, 12, 2, 2, 8)
  static = jax.jit(lambda *a: attention(*a, logit_scale=1.7, impl="xla"))(q, k, v)
  traced = jax.jit(lambda s: attention(q, k, v, logit_scale=s, impl="xla"))(jnp.float32(1.7))
  np.testing.assert_allclose(traced, static, rtol=1e-6, atol=1e-6)
  scaled = jax.jit(lambda *a: attention(*a, scale=1.7 * 8 ** -0.5, impl="xla"))(q, k, v)
  np.testing.assert_allclose(static, scaled, rtol=1e-6, atol=1e-6)
  with jax.enable_x64(True):   # the multiplier is trainable: its gradient through the softcap
    q64, k64, v64 = (x.astype(jnp.float64) for x in (q, k, v))
    f = jax.jit(lambda s: attention(q64, k64, v64, logit_scale=s, softcap=3.0, impl="xla"))
    check_grads(f, (jnp.float64(1.3),), order=1, modes=("rev",))


def test_auto_and_interpret_agree_with_xla():
  q, k, v, _ = make_inputs(2, 40, 40, 4, 2, 16)
  run = lambda impl, **kw: jax.jit(lambda *a: attention(*a, window=9, impl=impl, **kw))(q, k, v)
  want = run("xla")
  np.testing.assert_array_equal(run("auto"), want)   # a window: not the CPU kernel's, so xla
  got = run("interpret", block_q=16, block_k=128)
  np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize("platform,marker", [("tpu", "tpu_custom_call"),
                                             ("cuda", "__gpu$xla.gpu.triton")])
def test_lowers_for_tpu_and_gpu(platform, marker):
  """Through the public api (lax.platform_dependent): forward = 1 kernel, grad = fwd+dkdv+dq."""
  q = jax.ShapeDtypeStruct((2, 300, 6, 128), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((2, 300, 2, 128), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((2, 300), jnp.int32)
  fwd = lambda q, k, v, s: attention(q, k, v, segment_ids=s, window=128, softcap=30.0,
                                     logit_scale=s[0, 0].astype(jnp.float32), impl="pallas")
  loss = lambda *a: fwd(*a).astype(jnp.float32).sum()
  for fn, n in [(fwd, 1), (jax.grad(loss, argnums=(0, 1, 2)), 3)]:
    text = jax.jit(fn).trace(q, k, k, seg).lower(lowering_platforms=(platform,)).as_text()
    assert text.count(marker) == n
  # and the plain causal case at D=64
  q, k = (jax.ShapeDtypeStruct((1, 256, 4, 64), jnp.float32),) * 2
  text = jax.jit(jax.grad(lambda q, k, v: attention(q, k, v, impl="pallas").sum())).trace(
      q, k, k).lower(lowering_platforms=(platform,)).as_text()
  assert text.count(marker) == 3


@pytest.mark.parametrize("kwargs,match", [
    (dict(k_shape=(1, 8, 3, 4)), "K=3 must divide"),
    (dict(window=0), "window must be a positive int"),
    (dict(window=4, causal=False), "window=4 requires causal"),
    (dict(softcap=-1.0), "softcap"),
    (dict(impl="cuda"), "impl='cuda'"),
    (dict(segment_ids=jnp.zeros((1, 7), jnp.int32)), r"\(1, 8\)"),
    (dict(segment_ids=jnp.zeros((1, 8))), "integers"),
    (dict(logit_scale=jnp.ones(2)), "logit_scale must be a scalar"),
])
def test_bad_input_raises(kwargs, match):
  k_shape = kwargs.pop("k_shape", (1, 8, 2, 4))
  q, k = jnp.zeros((1, 8, 4, 4)), jnp.zeros(k_shape)
  with pytest.raises(ValueError, match=match):
    attention(q, k, k, **kwargs)


def test_bad_blocks_raise():
  with pytest.raises(ValueError, match="block_k=64"):
    pallas_tpu.blocks(100, 100, 64, 64, 512)
  with pytest.raises(ValueError, match="block_q"):
    pallas_gpu.blocks(100, 100, 48, 64, 64)


@pytest.mark.slow
def test_blockwise_memory_is_linear_in_T():
  """Compiled fwd+bwd temp memory (compile only, YNN fusion off, in a subprocess): blockwise grows
  ~linearly in T and is <= 1/20 of the materialised attention at T = 32k."""
  import pathlib
  import sys
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
  import bench_attention
  rows = {int(r["case"].split("T=")[1].split()[0]): r for r in bench_attention.memory_rows()}
  assert rows[32768]["ratio"] <= 1 / 20
  for T in (16384, 32768):   # doubling T: blockwise at most ~2x (linear), naive ~4x (quadratic)
    assert rows[T]["temp_MiB"] <= 2.5 * rows[T // 2]["temp_MiB"]
    assert rows[T]["baseline_temp_MiB"] >= 3.5 * rows[T // 2]["baseline_temp_MiB"]
