"""Stopping cleanly when the machine is taken away (SIGTERM) or the user
presses Ctrl-C (SIGINT): a checkpoint at the next step boundary, then exit.

Spot VMs, TPU maintenance events, Kubernetes evictions and SLURM time limits
send SIGTERM and kill the process a little later; without this, everything
since the last periodic checkpoint is lost. With it, the loop finishes the
step in flight, saves, and raises ``Preempted``; the command line prints how
to resume and exits with ``128 + signal number`` (143 for SIGTERM, 130 for
SIGINT), as a shell does for a process a signal ended. Rerunning the same
command continues from that checkpoint and ends bitwise equal (on CPU) to a
run that was never interrupted.

All processes must stop at the same step, or the ones that go on hang in
their next collective. One process: a signal handler sets a flag, read at
each step boundary. Several processes: JAX's preemption service (started by
``jax.distributed.initialize``) catches SIGTERM on any host and makes every
process agree on the step (``multihost_utils.reached_preemption_sync_point``);
a SIGINT is passed on to it as a SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import jax

log = logging.getLogger("genjax")


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, step: int, signum: int, workdir: str):
        self.step, self.signum = step, signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step} and saved a checkpoint in "
            f"{workdir}; run the same command again to resume from step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _sync_manager_ready() -> bool:
    try:
        from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
        return jax_distributed.global_state.preemption_sync_manager is not None
    except (ImportError, AttributeError):
        return False


class Watcher:
    """Signal handlers for the duration of a ``with`` block, and
    ``should_stop(step)`` for the loop.

    The previous handlers come back on exit. A second SIGINT while the first
    is being honoured interrupts at once (KeyboardInterrupt), as usual. Only
    the main thread can install handlers; elsewhere the watcher watches
    nothing (and says so in the log).
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._multi = False

    def __enter__(self) -> "Watcher":
        if threading.current_thread() is not threading.main_thread():
            log.info("not on the main thread: SIGTERM and SIGINT will not "
                     "checkpoint before stopping")
            return self
        self._multi = jax.process_count() > 1 and _sync_manager_ready()
        # Several processes: JAX's preemption service owns SIGTERM.
        signals = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        del frame
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Asked twice: stop now.
        if self._multi:
            self.signum = signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)  # To JAX's preemption service.
            return
        self.signum = signum
        log.warning("received %s: stopping after this step, with a checkpoint "
                    "(press Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    def should_stop(self, step: int) -> bool:
        """Whether to save and stop after ``step``; the same answer on every
        process. Cheap: call it after every step."""
        if self._multi:
            from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
            if multihost_utils.reached_preemption_sync_point(step):
                if self.signum is None:
                    self.signum = signal.SIGTERM
                return True
            return False
        return self.signum is not None
