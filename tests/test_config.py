"""Config: overrides parse to the field types; every bad value fails early with a message naming it."""
import json
import subprocess
import sys

import jax
import pytest

from configs import base
from configs.base import Config, ConfigError, apply_overrides, validate


def test_overrides_parse_to_field_types():
  cfg = apply_overrides(Config(), ["train.steps=300", "model.n_layers=2", "train.lr=1e-3",
                                   "model.tie_embeddings=false", "data.path=a.txt,b.txt"])
  assert cfg.train.steps == 300 and isinstance(cfg.train.steps, int)
  assert cfg.model.n_layers == 2
  assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
  assert cfg.model.tie_embeddings is False
  assert cfg.data.path == "a.txt,b.txt"


@pytest.mark.parametrize("override, words", [
    ("model.n_layer=2", ["model.n_layer", "did you mean 'model.n_layers'"]),
    ("trian.steps=3", ["trian.steps", "did you mean 'train.steps'"]),
    ("model.n_layers=two", ["model.n_layers=two", "int"]),
    ("train.lr=fast", ["train.lr=fast", "float"]),
    ("model.tie_embeddings=maybe", ["model.tie_embeddings", "bool"]),
    ("model=3", ["'model' is a section"]),
    ("train.steps", ["not of the form key.path=value"]),
])
def test_bad_overrides_name_the_key(override, words):
  with pytest.raises(ConfigError) as e:
    apply_overrides(Config(), [override])
  for w in words:
    assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("overrides, n_devices, words", [
    (["model.n_heads=3"], 1, ["model.n_heads=3", "model.d_model=256"]),
    (["model.n_kv_heads=3"], 1, ["model.n_kv_heads=3"]),
    (["mesh.data=4"], 8, ["needs 4 devices", "8 are available"]),
    (["mesh.data=-1", "mesh.fsdp=3"], 8, ["not divisible", "3"]),
    (["mesh.data=-1", "mesh.fsdp=-1"], 8, ["only one mesh axis may be -1"]),
    (["train.batch_size=12"], 8, ["12", "data-parallel size", "8"]),
    (["train.batch_size=32", "train.grad_accum=3"], 1, ["train.grad_accum=3"]),
    (["train.steps=0"], 1, ["train.steps=0"]),
    (["train.lr=-1e-3"], 1, ["train.lr=-0.001"]),
    (["model.attention=sigmod"], 1, ["model.attention='sigmod'", "did you mean 'sigmoid'"]),
    (["model.attn_impl=triton"], 1, ["model.attn_impl='triton'"]),
    (["data.source=parquet"], 1, ["data.source='parquet'"]),
    (["data.seq_len=512"], 1, ["data.seq_len=512", "model.max_len=256"]),
    (["train.warmup_steps=5000", "train.steps=100"], 1, ["train.warmup_steps=5000"]),
    (["mesh.tensor=8", "mesh.data=1", "model.n_heads=4", "model.d_model=256"], 8, ["mesh.tensor=8"]),
    (["data.val_fraction=1.5"], 1, ["data.val_fraction=1.5"]),
    (["mesh.cpu_devices=0"], 1, ["mesh.cpu_devices=0"]),
])
def test_impossible_combinations(overrides, n_devices, words):
  cfg = apply_overrides(Config(), overrides)
  with pytest.raises(ConfigError) as e:
    validate(cfg, n_devices)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_cpu_set_up_after_jax_started_reports_instead_of_changing_devices():
  from training import platform_cpu
  with pytest.raises(ConfigError, match="mesh.cpu_devices=0"):
    platform_cpu.configure(0)
  n = len(jax.devices())                      # the backend is running (conftest: 8 CPU devices)
  assert platform_cpu.runs_on_cpu()
  unapplied = platform_cpu.configure(2)
  assert len(jax.devices()) == n
  # XLA_FLAGS lacks them
  assert unapplied == [f"--{k}={v}" for k, v in platform_cpu.CPU_XLA_FLAGS.items()]


def test_a_host_peak_cached_too_low_is_raised_by_the_next_measurement(tmp_path, monkeypatch):
  """A peak first measured on a busy host (here 1 GFLOP/s: MFU would read far over 100%) is
  replaced by the next process's faster run; a higher cached peak is kept."""
  import json
  from training import platform_cpu
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  f = tmp_path / "seqzoo" / platform_cpu.PEAK_FILE
  platform_cpu.host_peak.cache_clear()
  try:
    fresh = platform_cpu.host_peak()             # no entry: the full measurement
    (key, entry), = json.loads(f.read_text()).items()
    assert entry["flops"] == fresh > 1e9
    f.write_text(json.dumps({key: {"flops": 1e9, "time": 0}}))
    platform_cpu.host_peak.cache_clear()
    assert platform_cpu.host_peak() > 1e9 and json.loads(f.read_text())[key]["flops"] > 1e9
    f.write_text(json.dumps({key: {"flops": 1e18, "time": 0}}))
    platform_cpu.host_peak.cache_clear()
    assert platform_cpu.host_peak() == 1e18
  finally:
    platform_cpu.host_peak.cache_clear()


def test_mesh_minus_one_takes_the_rest():
  assert base.mesh_shape(base.MeshConfig(data=-1, fsdp=2, tensor=2), 8) == dict(data=2, fsdp=2, tensor=2)


@pytest.mark.parametrize("path", [f"configs/{p.name}" for p in base.config_files()])
def test_every_config_file_loads_validates_and_documents_its_command(path):
  import importlib.util
  spec = importlib.util.spec_from_file_location("c", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  assert mod.__doc__ and "python " in mod.__doc__.split("\n\n")[1], "docstring opens with its command"
  validate(base.load(path), n_devices=1)


def test_json_round_trip():
  cfg = apply_overrides(Config(), ["model.n_layers=3", "train.lr=0.01"])
  assert base.from_dict(base.to_dict(cfg)) == cfg


# The model section of a run saved before each family had its own config: one flat ModelConfig
# with every family's fields (configs/mamba_tiny.py's).
FLAT_MAMBA_TINY = {
    "name": "mamba", "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4,
    "n_kv_heads": 0, "d_head": 0, "d_ff": 1024, "max_len": 128, "norm": "rmsnorm",
    "norm_bias": False, "norm_eps": 1e-05, "norm_placement": "pre", "pos": "none",
    "rope_theta": 10000.0, "mlp": "gelu", "gelu_exact": False, "use_bias": False,
    "tie_embeddings": True, "attention": "softmax", "attn_impl": "auto", "init_std": 0.02,
    "scan_layers": True, "remat": "none", "param_dtype": "float32", "dtype": "float32",
    "matmul_dtype": "", "mix_v": "dense", "mix_o": "dense", "mix_up": "dense", "mix_down": "dense",
    "cln": True, "v_norm": True, "frozen_tokens": False, "kron_init": "identity",
    "qk_norm": False, "layer_scale": 0.0, "hybrid_norm": False, "dn_conv": 4, "dn_gate": False,
    "dn_decay": False, "dn_chunk": 64, "dn_hybrid": "none", "dn_window": 512, "d_state": 16,
    "d_conv": 4, "expand": 2, "dt_rank": 0, "dt_min": 0.001, "dt_max": 0.1, "ssm_head_dim": 64,
    "ssm_groups": 1, "ssm_chunk": 64, "layer_pattern": ""}


def test_a_flat_config_json_of_an_older_run_loads_as_the_same_run(tmp_path):
  from training import workdir
  cfg = base.load("configs/mamba_tiny.py")
  old = dict(base.to_dict(cfg), model=FLAT_MAMBA_TINY)
  assert base.from_dict(old) == cfg            # the other families' fields are dropped
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir.check_workdir(tmp_path, cfg)         # train.py resumes it
  with pytest.raises(ConfigError, match="holds another run"):
    workdir.check_workdir(tmp_path, apply_overrides(cfg, ["model.d_state=8"]))
  with pytest.raises(ConfigError, match="unknown keys \\['d_stat'\\]"):
    base.from_dict(dict(old, model=dict(FLAT_MAMBA_TINY, d_stat=8)))


def test_model_name_selects_the_family_and_its_fields():
  cfg = base.load("configs/quickstart.py",
                  ["model.d_state=8", "model.name=mamba", "model.pos=none"])
  assert type(cfg.model).__name__ == "MambaConfig" and cfg.model.d_state == 8   # name goes first
  assert cfg.model.d_model == 128                                      # kept: both have it
  validate(cfg, 1)
  with pytest.raises(ConfigError) as e:                                # another family's field
    apply_overrides(cfg, ["model.n_heads=8"])
  assert "unknown config key 'model.n_heads'" in str(e.value)
  assert "only implemented for model.name='decoder'" in str(e.value), str(e.value)
  with pytest.raises(ConfigError, match="did you mean 'model.d_state'"):
    apply_overrides(cfg, ["model.d_stat=8"])
  with pytest.raises(ConfigError, match="did you mean 'model.n_heads'"):
    base.model_config("decoder", n_head=4)


def test_cli_reports_a_typo_without_traceback_and_before_compiling():
  r = subprocess.run([sys.executable, "train.py", "--config", "configs/quickstart.py",
                      "--workdir", "/nonexistent/never-created", "model.n_layer=2"],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2
  assert "did you mean 'model.n_layers'" in r.stderr
  assert "Traceback" not in r.stderr


_FAULTS = """
import resource, sys, numpy as np
from training import platform_cpu
if sys.argv[1] == "keep":
  assert platform_cpu.keep_freed_memory()
def touch():
  a = np.empty(64 << 20, np.uint8); a[::4096] = 1      # 64 MiB, one write per page
touch()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def test_keep_freed_memory_stops_refaulting_big_buffers():
  # glibc's default mmaps a 64 MiB block and unmaps it on free, so each reuse faults its pages in
  # again (hundreds to 16k faults per round, with or without huge pages); kept, they stay mapped.
  faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True, text=True,
                                     capture_output=True).stdout)
            for mode in ("default", "keep")}
  assert faults["default"] >= 5 * 30 and faults["keep"] * 10 < faults["default"], faults


def test_shakespeare_char_is_the_same_on_every_cpu_and_amx_gets_a_note(monkeypatch):
  # The config reads nothing of the host: bfloat16 dots on AMX CPUs are an explicit override, which
  # the CPU platform's start-up suggests where the flags list AMX-BF16.
  from configs import shakespeare_char as sc
  from training import platform_cpu
  assert platform_cpu.has_amx_bf16("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\n")
  assert not platform_cpu.has_amx_bf16("flags\t\t: sse avx512f avx512_bf16\n")
  assert not platform_cpu.has_amx_bf16("flags\t\t: fpu avx2 fma avx512f\nbugs\t\t: amx_bf16\n")
  assert not platform_cpu.has_amx_bf16("")
  cfg = sc.get_config()
  assert (cfg.model.matmul_dtype, cfg.mesh.cpu_devices) == ("float32", 1)
  for has in (True, False):
    monkeypatch.setattr(platform_cpu, "has_amx_bf16", lambda has=has: has)
    assert sc.get_config() == cfg
    notes = platform_cpu.start(cfg.model)        # conftest: the backend is CPU
    assert any("model.matmul_dtype=bfloat16" in n for n in notes) == has, notes
