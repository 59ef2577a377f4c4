"""Multi-process start-up (JAX's multi-controller runtime) and the agreements processes need.

Run the same command on every host; `initialize` makes the one `jax.distributed.initialize` call,
before anything else touches JAX's backends. How the processes find each other:

    TPU pod slice  JAX reads the TPU VM's metadata   (detected: libtpu found TPU chips)
    SLURM          JAX reads SLURM_* (srun)          (detected: SLURM_NTASKS > 1)
    Open MPI       JAX reads OMPI_* (mpirun)         (detected: OMPI_COMM_WORLD_SIZE > 1)
    explicit       --coordinator host:port --num-processes N --process-id i
    one process    none of the above: nothing is initialised

No launcher of our own: the cluster's (srun, mpirun, gcloud ... --worker=all) starts the processes.
On CPU the cross-process collectives are gloo (jax_cpu_collectives_implementation).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from configs.base import ConfigError

_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def add_args(parser) -> None:
  g = parser.add_argument_group("multi-process (jax.distributed; see docs/multihost.md)")
  g.add_argument("--coordinator", default=None, help="host:port of process 0 (explicit launch)")
  g.add_argument("--num-processes", type=int, default=None, help="processes in the job")
  g.add_argument("--process-id", type=int, default=None, help="this process, 0 .. N-1")
  g.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                 help="auto: initialise if flags or a TPU/SLURM/Open MPI multi-process environment "
                      "say so; on: always call jax.distributed.initialize(); off: never")


def detect(env=os.environ) -> str | None:
  """The multi-process environment this process runs in, or None for a single process."""
  def count(key):
    try:
      return int(env.get(key, "1"))
    except ValueError:
      return 1
  if all(k in env for k in _SLURM) and count("SLURM_NTASKS") > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
    return "open mpi"
  from jax._src import cloud_tpu_init   # set at `import jax` when libtpu finds TPU chips
  if cloud_tpu_init.running_in_cloud_tpu_vm:
    return "tpu"
  return None


def initialize(args) -> str:
  """Calls jax.distributed.initialize when needed; returns how this process was started."""
  explicit = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
              "--process-id": args.process_id}
  given = [k for k, v in explicit.items() if v is not None]
  if given and args.distributed == "off":
    raise ConfigError(f"{', '.join(given)} given with --distributed=off")
  if given:
    missing = [k for k, v in explicit.items() if v is None]
    if missing:
      raise ConfigError(f"an explicit multi-process launch needs {', '.join(explicit)}; "
                        f"missing {', '.join(missing)}")
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit():
      raise ConfigError(f"--coordinator={args.coordinator!r} is not of the form host:port")
    if args.num_processes < 1:
      raise ConfigError(f"--num-processes={args.num_processes} must be >= 1")
    if not 0 <= args.process_id < args.num_processes:
      raise ConfigError(f"--process-id={args.process_id} is not in [0, --num-processes="
                        f"{args.num_processes})")
    _cpu_collectives()
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               cluster_detection_method="deactivate")
    how = f"explicit, coordinator {args.coordinator}"
  else:
    how = None if args.distributed == "off" else detect()
    if how is None and args.distributed == "on":
      how = "jax auto-detection"
    if how is None:
      return "single process"
    _cpu_collectives()
    jax.distributed.initialize()     # JAX reads the TPU metadata / SLURM / Open MPI environment
  return f"process {jax.process_index()} of {jax.process_count()} ({how})"


def _cpu_collectives():
  # gloo is 0.10.2's default; set it unless the user chose (e.g. mpi) through the environment.
  if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def check_batch_layout(b_sh, global_shape: tuple) -> None:
  """Each process must own one contiguous block of batch rows, blocks in process order.

  The data pipeline gives process p rows [p*b, (p+1)*b) of every global batch; a device order that
  interleaves processes along the batch axis would silently pair rows with the wrong devices.
  """
  rows = set()
  for idx in b_sh.addressable_devices_indices_map(global_shape).values():
    rows.update(range(*idx[0].indices(global_shape[0])))
  b = global_shape[0] // jax.process_count()
  want = set(range(jax.process_index() * b, (jax.process_index() + 1) * b))
  if rows != want:
    raise ConfigError(f"process {jax.process_index()}'s devices hold batch rows "
                      f"{sorted(rows)[:4]}...; expected the block [{min(want)}, {max(want) + 1}); "
                      "the mesh's device order must group each process's devices")


def to_global(local_batch: dict, batch_sharding) -> dict:
  """This process's rows of a batch (numpy) -> the global jax.Arrays the step takes."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, v)
          for k, v in local_batch.items()}


def preemption_point(step: int) -> bool:
  """Multi-process: True on every process at the same step once any of them got SIGTERM (JAX's
  preemption service owns the signal there); always False for one process."""
  if jax.process_count() == 1:
    return False
  from jax.experimental import multihost_utils
  return multihost_utils.reached_preemption_sync_point(step)


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any (a tiny all-gather; identity on one process)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
