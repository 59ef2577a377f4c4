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


# ---------------------------------------------------------------------------------------------
# Tiers. The default run (README's command) must stay under 5 minutes on 2 cores: it keeps one
# end-to-end smoke run per entry point and the fast checks; the long end-to-end, fault and
# interpret-matrix tests below run in CI's second job (`python -m pytest -q -m slow`). Node ids
# (a prefix matches every parametrisation), grouped by why they are slow; measured 10-90 s each.
SLOW = (
    # end-to-end runs beyond the smoke runs (train: test_tiny_run_loss_drops_and_eval_reports;
    # export: test_exported_weights_get_the_folders_file_mode; eval: test_eval's fast tests)
    "tests/test_step.py::test_grad_accumulation_equals_one_big_batch_and_bf16_tracks_fp32",
    "tests/test_layer_stats.py::test_train_step_logs_per_layer_statistics_only_when_asked",
    "tests/test_sigma_reparam.py::test_train_step_moves_u_v_only_by_one_power_iteration",
    "tests/test_sigma_reparam.py::test_u_v_checkpoint_and_resume_bitwise",
    "tests/test_train.py::test_same_losses_and_params_on_every_mesh",
    "tests/test_train.py::test_workdir_of_another_run_is_refused",
    "tests/test_export.py::test_safetensors_round_trip_and_imported_run_continues_training",
    "tests/test_export.py::test_export_and_import_on_the_runs_own_mesh",
    "tests/test_export.py::test_stablehlo_runs_without_seqzoo",
    "tests/test_export.py::test_zoo_model_without_hf_class",
    "tests/test_export.py::test_a_run_whose_mesh_the_devices_cannot_hold_falls_back",
    "tests/test_eval.py::test_eval_on_the_runs_mesh_equals_one_device",
    "tests/test_distributed.py::test_decoder_pure_fsdp_mesh_equals_one_device",
    "tests/test_zoo_mamba.py::test_tiny_config_trains_and_samples[mamba2_hybrid]",
    "tests/test_zoo_mamba.py::test_recurrent_decode_equals_chunked_forward[mamba2_hybrid]",
    "tests/test_zoo_deltanet.py::test_train_steps_lower_the_loss",
    "tests/test_model.py::test_kv_cache_decoding_equals_full_forward[cfg1]",
    "tests/test_model.py::test_packed_sequences_equal_separate_sequences[cfg1]",
    "tests/test_model.py::test_remat_keeps_values_and_grads",
    # faults: kill -9, signals, full or read-only disks, damaged checkpoints, another mesh
    "tests/test_train.py::test_kill_9_and_resume_is_bitwise_identical",
    "tests/test_train.py::test_sigterm_saves_and_exits_cleanly",
    "tests/test_faults.py::test_full_disk_while_saving",
    "tests/test_faults.py::test_read_only_checkpoint_dir",
    "tests/test_faults.py::test_damaged_latest_checkpoint",
    "tests/test_faults.py::test_non_finite_updates_are_skipped",
    "tests/test_faults.py::test_checkpoint_restores_on_another_mesh",
    "tests/test_bad_input.py::test_checkpoint_of_another_model_shape",
    "tests/test_workdir_promises.py::test_ctrl_c_saves_and_exits_130",
    "tests/test_workdir_promises.py::test_signal_before_the_first_compile_is_honoured",
    # the interpret matrix on meshes (attention with GQA stays in the default run)
    "tests/test_shard_kernels.py::test_model_on_mesh_equals_one_device_interpret[selective_scan]",
    "tests/test_shard_kernels.py::test_model_on_mesh_equals_one_device_interpret[delta_rule]",
    "tests/test_shard_kernels.py::test_model_on_mesh_equals_one_device_interpret[gated_delta_rule]",
    "tests/test_shard_kernels.py::test_model_on_mesh_equals_one_device_interpret[ssd_groups]",
    "tests/test_shard_kernels.py::test_model_on_mesh_equals_one_device_interpret[sigmoid_attention]",
    "tests/test_shard_kernels.py::test_model_on_mesh_equals_one_device_interpret[dual_stream]",
    "tests/test_shard_kernels.py::test_cpu_attention_kernel_runs_per_shard",
    # compiles for TPU/GPU slices beyond one per model family (the rest are in the default run)
    "tests/test_aot.py::test_tiny_configs_compile_for_v5e_with_pallas_kernels[mamba2_hybrid_tiny",
    "tests/test_aot.py::test_tiny_configs_compile_for_v5e_with_pallas_kernels[sigmoid_tiny",
    "tests/test_aot.py::test_flops_agree_with_the_model_count",
    "tests/test_aot.py::test_wave2a_options_and_statistics_compile_sharded_for_v5e",
    "tests/test_aot.py::test_crmsnorm_stream_of_odd_width_compiles_sharded_for_v5e",
    "tests/test_eval.py::test_eval_step_compiles_for_v5e",
    "tests/test_export.py::test_forward_compiles_for_v5e_on_the_runs_mesh",
    "tests/kernels/test_attention.py::test_tracing_never_builds_the_cpu_kernel",
)


def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.nodeid.startswith(SLOW):
      item.add_marker(pytest.mark.slow)
