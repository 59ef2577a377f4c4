"""train.py --aot: the train step compiled for real TPU and GPU slices on this CPU host.

libtpu (the `tpu` extra) compiles for TPU topologies, the CUDA plugin + ptxas (`gpu-aot`) for GPUs;
each test skips, saying which extra to install, where its compiler is absent. Compiles cost several
seconds each on a 2-core machine: the default suite compiles every tiny config once (meshes
rotated among them) and checks the FLOPs of two; the other combinations are marked slow.
"""
import collections
import functools
import importlib.util
import re

import pytest

import entry
import modelzoo
from configs import base
from configs.base import ConfigError
from training import aot, hardware

TINY = ["quickstart", "sigmoid_tiny", "deltanet_tiny", "mamba_tiny", "mamba2_hybrid_tiny",
        "dual_stream_tiny_kronecker"]
MESHES = {"data4": ["mesh.data=4"], "fsdp4": ["mesh.data=1", "mesh.fsdp=4"],
          "data2_tensor2": ["mesh.data=2", "mesh.tensor=2"]}
PALLAS = ["model.attn_impl=pallas"]
B = 24          # global batch: 6 rows per device on 4 devices (so the shard test reuses compiles)


def _missing(platform):
  return hardware.missing(platform)


needs_tpu = pytest.mark.skipif(bool(_missing("tpu")), reason="no TPU compiler (libtpu): "
                               + hardware.INSTALL["tpu"])
needs_gpu = pytest.mark.skipif(bool(_missing("cuda")), reason="no CUDA compiler plugin/ptxas: "
                               + hardware.INSTALL["cuda"])


@functools.lru_cache(maxsize=None)
def devices(topology):
  return hardware.topology_devices(topology)


@functools.lru_cache(maxsize=None)
def compiled(config, overrides: tuple, topology, n_devices=None):
  """The step of configs/<config>.py + overrides compiled for the topology (its first n devices)."""
  chip, devs = devices(topology)
  cfg = base.load(f"configs/{config}.py", overrides)
  return aot.compile_step(cfg, devs[:n_devices], hardware.compiler_options(chip))[0]


def kernel_shapes(hlo: str, target: str) -> list[tuple[str, ...]]:
  """Per kernel custom call in a compiled module: its operands' shapes, e.g. ('f32[6,4,128,32]', ...),
  read from the instructions that define them (HLO instruction names are module-unique)."""
  shape_of = dict(re.findall(r"^\s*(?:ROOT )?%(\S+) = (\w+\[[\d,]*\])", hlo, re.M))
  shape_of.update(re.findall(r"%(\S+): (\w+\[[\d,]*\])", hlo))   # computation parameters
  calls = []
  for args in re.findall(r"custom-call\(([^)]*)\)[^\n]*custom_call_target=\"" + re.escape(target),
                         hlo):
    names = re.findall(r"%([^\s,)]+)", args)
    calls.append(tuple(shape_of[n] for n in names))
  return calls


def cases():
  """(config, mesh): one mesh per config in the default suite (rotating), the others slow."""
  meshes = list(MESHES)
  return [pytest.param(config, mesh, id=f"{config}-{mesh}",
                       marks=() if mesh == meshes[i % len(meshes)] else pytest.mark.slow)
          for i, config in enumerate(TINY) for mesh in meshes]


@needs_tpu
@pytest.mark.parametrize("config, mesh", cases())
def test_tiny_configs_compile_for_v5e_with_pallas_kernels(config, mesh):
  c = compiled(config, (*MESHES[mesh], f"train.batch_size={B}", *PALLAS), "v5e:2x2")
  assert kernel_shapes(c.as_text(), aot.KERNEL_CALLS["tpu"]), "no Pallas TPU kernel in the step"
  assert c.memory_analysis().argument_size_in_bytes > 0


@needs_gpu
@pytest.mark.parametrize("config", [
    pytest.param(c, marks=() if c == "quickstart" else pytest.mark.slow) for c in TINY])
def test_tiny_configs_compile_for_h100_with_triton_kernels(config):
  c = compiled(config, ("mesh.data=8", *PALLAS), "h100:1x1x8")
  assert kernel_shapes(c.as_text(), aot.KERNEL_CALLS["cuda"]), "no Triton kernel in the step"


@pytest.mark.parametrize("topology, config, mesh", [
    pytest.param("v5e:2x2", "quickstart", "data4", marks=needs_tpu),
    pytest.param("v5e:2x2", "mamba_tiny", "fsdp4", marks=[needs_tpu, pytest.mark.slow]),
    pytest.param("h100:1x1x8", "quickstart", "data4", marks=[needs_gpu, pytest.mark.slow]),
    pytest.param("h100:1x1x8", "mamba_tiny", "fsdp4", marks=[needs_gpu, pytest.mark.slow]),
])
def test_kernels_see_their_shard_of_the_batch(topology, config, mesh):
  """Each kernel call of the 4-device step has the operand shapes of a 1-device step fed a
  quarter of the batch: a custom call the partitioner left on the global batch would not."""
  platform = devices(topology)[0].platform         # the chip's: tpu | cuda
  sharded = compiled(config, (*MESHES[mesh], f"train.batch_size={B}", *PALLAS), topology, 4)
  alone = compiled(config, ("mesh.data=1", "mesh.fsdp=1", f"train.batch_size={B // 4}", *PALLAS),
                   topology, 1)
  calls = kernel_shapes(sharded.as_text(), aot.KERNEL_CALLS[platform])
  expect = kernel_shapes(alone.as_text(), aot.KERNEL_CALLS[platform])
  assert calls, "no kernel custom call found"
  assert collections.Counter(calls) == collections.Counter(expect), (
      f"kernel operands on 4 devices {sorted(set(calls))} != one device's {sorted(set(expect))}")


WAVE2A = ("model.norm_placement=peri", "model.mlp=polynorm", "model.attn_gate=true",
          "model.attn_clip_gamma=-0.03", "model.sigma_reparam=true", "train.log_hidden_rms=true",
          "train.log_act_nonzero=true", "train.log_attn_entropy=true", "train.log_outliers=true")


@needs_tpu
@pytest.mark.parametrize("mesh", ["data4", "data2_tensor2"])
def test_wave2a_options_and_statistics_compile_sharded_for_v5e(mesh):
  """Peri-norm, PolyNorm, gated and clipped attention, σReparam and every train.log_* statistic
  in one step, compiled by XLA:TPU for a 4-chip slice, sharded (the statistics come back replicated)."""
  c = compiled("quickstart", (*MESHES[mesh], f"train.batch_size={B}", *PALLAS, *WAVE2A), "v5e:2x2")
  assert c.memory_analysis().argument_size_in_bytes > 0
  assert "all-reduce" in c.as_text()


@needs_tpu
@pytest.mark.parametrize("mesh", ["fsdp4", "data2_tensor2"])
def test_crmsnorm_stream_of_odd_width_compiles_sharded_for_v5e(mesh):
  """Pre-CRMSNorm's residual stream is d - 1 = 127 wide: it still shards (fsdp splits it unevenly)
  and compiles for a 4-chip slice, with the head's bias."""
  c = compiled("quickstart", (*MESHES[mesh], f"train.batch_size={B}", *PALLAS, "model.norm=crmsnorm",
                              "model.tie_embeddings=false", "model.head_bias=true"), "v5e:2x2")
  assert c.memory_analysis().argument_size_in_bytes > 0


FLOPS_CASES = [(c, []) for c in TINY] + [          # and stacks of 2-layer units, grad accumulation
    ("deltanet_tiny", ["model.dn_hybrid=swa"]),
    ("mamba2_hybrid_tiny", ["model.layer_pattern=M*M*", "model.n_layers=4"]),
    ("quickstart", ["train.grad_accum=2"])]


@needs_tpu
@pytest.mark.parametrize("config, extra", [
    pytest.param(c, x, marks=() if (c, x) == ("quickstart", []) else pytest.mark.slow,
                 id="-".join([c, *x])) for c, x in FLOPS_CASES])
def test_flops_agree_with_the_model_count(config, extra):
  """The reported FLOPs (XLA's, loops unrolled and extrapolated, + kernels) match 6N + mixers;
  XLA's count of the step itself is 3-4x low for the scanned stacks, so must not be what we use."""
  cfg = base.load(f"configs/{config}.py", ["mesh.data=4", *PALLAS, *extra])
  r = aot.report(cfg, "v5e:2x2")
  assert r["fits"] and r["kernel_calls"] > 0
  assert abs(r["flops_vs_model"] - 1) < aot.FLOPS_TOL, r
  if cfg.model.n_layers // modelzoo.layer_unit(cfg.model) > 1:   # a scanned stack: XLA's count
    assert r["xla_raw_flops"] < 0.7 * r["xla_flops"], r          # of the step saw one unit
  assert r["bytes_accessed"] > 0 and r["step_s"] > 0 and 0 < r["mfu"] <= 1


@needs_tpu
def test_a_step_that_does_not_fit_exits_4_with_the_memory_figures(capsys):
  code = entry.train(["--config", "configs/quickstart.py", "--aot", "v5e:2x2", "mesh.data=4",
                    "train.batch_size=65536", "model.attn_impl=xla"])
  out = capsys.readouterr().out
  assert code == 4, out
  assert "DOES NOT FIT" in out and "MiB" in out and re.search(r"\d+(\.\d+)?G", out), out


@needs_tpu
def test_one_line_errors(capsys):
  for argv, words in [(["--aot", "v9:2x2"], "is not a topology"),
                      (["--aot", "v5e:2x2", "mesh.data=3"], "needs 3 devices")]:
    assert entry.train(["--config", "configs/quickstart.py", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --aot") and words in err and "\n" not in err, err


def test_a_missing_compiler_names_the_extra(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(ConfigError, match=re.escape("pip install -e '.[tpu]'")):
    hardware.topology_devices("v5p:4x4x4")
  with pytest.raises(ConfigError, match=re.escape("pip install -e '.[gpu-aot]'")):
    hardware.topology_devices("a100:1x1x8")
