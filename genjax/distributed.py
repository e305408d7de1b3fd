"""Several processes (hosts) in one run, with JAX's own runtime.

``initialize`` is called once, before anything touches a device (the command
line does it first thing): it starts ``jax.distributed`` when the run has
several processes and does nothing for one, so the same command runs on a
laptop, an 8-device host, a Cloud TPU pod slice or a SLURM allocation.

Where the processes come from:

- flags named as ``jax.distributed.initialize``'s own arguments,
  ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``
  (``JAX_COORDINATOR_ADDRESS`` in the environment also counts);
- else JAX's own cluster detection (Cloud TPU pods, SLURM, Open MPI,
  Kubernetes), which needs no flag: where it finds a cluster of several
  processes, JAX fills in every argument;
- else one process, and nothing to do.

After it, every process runs the same program: each feeds its own rows of
every global batch (``jax.make_array_from_process_local_data``), all take
part in every collective, and only process 0 (``is_chief``) writes metrics,
figures, progress bars and ``eval.json``; checkpoints go through orbax,
which coordinates the processes itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable, TypeVar

import jax
import numpy as np

from genjax.config import ConfigError

log = logging.getLogger("genjax")

T = TypeVar("T")

# The flags of the command line (genjax/cli.py), spelt as the arguments of
# jax.distributed.initialize.
FLAGS = ("coordinator_address", "num_processes", "process_id")

_started = False


def detected_cluster() -> tuple[str, int] | None:
    """``(name, process count)`` of the cluster JAX's own auto-detection
    finds (the environments ``jax.distributed.initialize()`` supports with
    no arguments), or None outside one. Uses JAX's registry of cluster
    environments; if a JAX version moves it, only the explicit flags and
    ``JAX_COORDINATOR_ADDRESS`` remain (logged)."""
    try:
        from jax._src import clusters  # pylint: disable=import-outside-toplevel
        kinds = list(clusters.ClusterEnv._cluster_types)  # pylint: disable=protected-access
    except (ImportError, AttributeError) as e:
        log.debug("JAX's cluster detection is not available here: %s", e)
        return None
    for kind in kinds:
        if getattr(kind, "opt_in_only_method", False):
            continue
        try:
            if kind.is_env_present():
                return kind.__name__, int(kind.get_process_count())
        except Exception as e:  # pylint: disable=broad-except
            log.debug("cluster detection %s failed: %s", kind.__name__, e)
    return None


def _check_flags(coordinator_address, num_processes, process_id) -> None:
    if num_processes is not None and (
            isinstance(num_processes, bool) or int(num_processes) < 1):
        raise ConfigError(f"--num_processes={num_processes} must be a positive "
                          "number of processes")
    if process_id is not None and num_processes is not None and not (
            0 <= int(process_id) < int(num_processes)):
        raise ConfigError(f"--process_id={process_id} must be in [0, "
                          f"--num_processes={num_processes})")
    if coordinator_address is not None and (
            ":" not in coordinator_address
            or not coordinator_address.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"--coordinator_address={coordinator_address} must be "
                          "HOST:PORT, e.g. localhost:12355")


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts ``jax.distributed`` if this run has several processes.

    Returns True if it did (or had already), False for one process. Must be
    called before the first JAX operation; calling it again is a no-op.

    Raises:
      ConfigError: a bad or incomplete set of flags, or JAX's runtime
        refusing them (one line).
    """
    global _started
    if _started:
        return True
    _check_flags(coordinator_address, num_processes, process_id)
    explicit = [coordinator_address, num_processes, process_id]
    if num_processes is not None and int(num_processes) == 1:
        return False  # One process, said explicitly.
    if any(v is not None for v in explicit) or os.environ.get(
            "JAX_COORDINATOR_ADDRESS"):
        reason = "flags"
    else:
        cluster = detected_cluster()
        if cluster is None or cluster[1] <= 1:
            return False
        reason = f"{cluster[0]} ({cluster[1]} processes)"
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=None if num_processes is None else int(num_processes),
            process_id=None if process_id is None else int(process_id))
    except (ValueError, TypeError) as e:
        given = " ".join(f"--{k}={v}" for k, v in zip(FLAGS, explicit)
                         if v is not None)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"could not start the multi-process runtime ({first}); give all of "
            f"--coordinator_address=HOST:PORT --num_processes=N --process_id=I"
            + (f" (got {given})" if given else "")) from None
    _started = True
    log.info("process %d of %d (from %s); %d local and %d global devices",
             jax.process_index(), jax.process_count(), reason,
             jax.local_device_count(), jax.device_count())
    return True


def is_chief() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def config_hash(config_dict: dict) -> int:
    """A 62-bit hash of a config (as a JSON-able dict)."""
    text = json.dumps(config_dict, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2


def check_same_config(config_dict: dict) -> None:
    """Raises ConfigError on every process unless all processes run the same
    config (its hash); a no-op for one process. Called at start-up, before
    any step: processes with different configs would compile different
    programs and hang in their first collective instead of failing."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    mine = config_hash(config_dict)
    # Two 31-bit halves: int32 survives JAX's default 32-bit mode.
    halves = np.asarray([mine >> 31, mine & 0x7FFFFFFF], np.int32)
    hashes = np.asarray(multihost_utils.process_allgather(halves)).reshape(-1, 2)
    every = [(int(hi) << 31) | int(lo) for hi, lo in hashes]
    differ = [p for p, h in enumerate(every) if h != every[0]]
    if differ:
        raise ConfigError(
            f"the processes do not run the same config: process(es) "
            f"{', '.join(map(str, differ))} differ from process 0 (config "
            f"hashes {every[0]:x} and {every[differ[0]]:x}); start every "
            "process with the same flags and --config overrides")


_barriers = 0


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process gets here (a no-op for one process).

    Through the coordination service of ``jax.distributed`` with a timeout
    (a process that died or went astray fails the others instead of hanging
    them), or a device-wide sync where that service is not available.
    """
    global _barriers
    if jax.process_count() == 1:
        return
    _barriers += 1
    barrier_id = f"genjax/{name}/{_barriers}"  # Each barrier is used once.
    try:
        from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
        client = jax_distributed.global_state.client
    except (ImportError, AttributeError):
        client = None
    if client is None:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices(barrier_id)
        return
    client.wait_at_barrier(barrier_id, timeout_in_ms=int(timeout_s * 1000))


def chief_first(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on process 0 first, then on the others (e.g. preparing a
    dataset on disk that every process then reads). If it fails on process
    0, the others run it too and fail the same way, instead of waiting."""
    if jax.process_count() == 1:
        return fn()
    if is_chief():
        try:
            return fn()
        finally:
            barrier(name)
    barrier(name)
    return fn()
