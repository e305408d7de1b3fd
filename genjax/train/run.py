"""Building a run: the config checked, the data loaded, the task, optimiser
and state shapes made. Nothing here trains, evaluates or writes a file.

``build(config, workdir, make_task)`` is what training, evaluation, sampling,
the benchmark and the notebooks share. It opens no checkpoint manager (the
``Checkpointer`` opens one on first use) and creates no directory.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax import data as data_lib
from genjax import distributed
from genjax.data import subsets
from genjax.evaluate import sample_quality
from genjax.train import checkpoint as ckpt_lib
from genjax.train import step as step_lib
from genjax.train.state import build_optimizer

log = logging.getLogger("genjax")


def data_seed(seed: int) -> int:
    """The data-order seed derived from ``config.seed`` (never the clock)."""
    return int(np.random.SeedSequence([seed, 0x6A7A]).generate_state(1)[0])


@dataclasses.dataclass
class Run:
    """Everything built from a config, before any step is taken."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: Any
    # The train state's shardings (replicated, or along ``fsdp``).
    state_sharding: Any
    dataset: data_lib.Dataset
    task: Any
    optimizer: Any
    schedule: Any
    abstract_state: Any
    init_state_fn: Callable
    checkpointer: ckpt_lib.Checkpointer
    # Jitted eval/sample functions, compiled once per run and reused.
    compiled: dict = dataclasses.field(default_factory=dict)

    def key(self, purpose: str) -> jax.Array:
        """The root key of ``purpose`` (``step.PURPOSE``) for this run's seed."""
        return step_lib.root_key(self.config.seed, purpose)

    def jit(self, fn: Callable, **kwargs) -> Callable:
        """``fn`` jitted under this run's mesh, its outputs replicated (so the
        host can read them), unless ``out_shardings`` says otherwise."""
        kwargs.setdefault("out_shardings", step_lib.replicated(self.mesh))
        return jax.jit(step_lib.under_mesh(fn, self.mesh), **kwargs)


def validate(config: ml_collections.ConfigDict, devices=None) -> None:
    """Checks that need no data or devices beyond counting them (``devices``,
    or all of them).

    Raises ConfigError with an actionable one-line message. Called before the
    workdir is created, so a bad config writes nothing.
    """
    t = config.train
    for key in ("batch_size", "num_steps", "log_every", "eval_every",
                "checkpoint_every"):
        if getattr(t, key) <= 0:
            raise config_lib.ConfigError(
                f"train.{key}={getattr(t, key)} must be positive")
    try:
        build_optimizer(t)  # An unknown optimizer or schedule is a usage error.
        protocol = config.eval.get("sample_quality")
        if protocol is not None:
            sample_quality.validate_protocol(protocol)
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None
    accum = t.get("grad_accum_steps", 1)
    if accum < 1 or t.batch_size % accum:
        raise config_lib.ConfigError(
            f"train.grad_accum_steps={accum} must be a positive divisor of "
            f"train.batch_size={t.batch_size}")
    mesh = step_lib.mesh_of(config, devices)
    step_lib.check_batch_divides(t.batch_size, "train.batch_size", mesh)
    if accum > 1:
        step_lib.check_batch_divides(
            t.batch_size // accum,
            f"train.batch_size / train.grad_accum_steps (the micro-batch, "
            f"{t.batch_size}/{accum})", mesh)
    if config.eval.batch_size <= 0:
        raise config_lib.ConfigError(
            f"eval.batch_size={config.eval.batch_size} must be positive")
    if "compute_dtype" in t:
        config_lib.check_choice("train.compute_dtype", t.compute_dtype,
                                tuple(step_lib.COMPUTE_DTYPES))
    num_examples = config.eval.get("num_examples", 0)
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise config_lib.ConfigError(
            f"eval.num_examples={num_examples!r} must be 0 (the whole test "
            "split) or a positive number of examples")
    # The eval batch need not divide the devices: evaluation pads it
    # (``evaluation.pad_to_devices``) and masks the padding.


def check_data(config: ml_collections.ConfigDict, dataset) -> None:
    """Checks that need the loaded data: whatever the run will ask of it
    after training (the sample-quality protocol's splits, and enough images
    to train its feature extractor and count neighbours) is checked here,
    so that a run that cannot finish fails before its first step.

    Raises ConfigError with an actionable one-line message.
    """
    protocol = config.eval.get("sample_quality")
    if protocol is None:
        return
    try:
        sample_quality.check_data(dataset, protocol)
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None


def build(config: ml_collections.ConfigDict, workdir: str,
          make_task: Callable, dataset=None, devices=None) -> Run:
    """Loads the data, checks it (``check_data``) and builds the task,
    optimiser and state shapes.

    ``config.cpu_devices`` is applied first (``step.split_host_cpu``), so a
    notebook or a test gets the preset's devices as the command line does.
    ``dataset``, if given, is used instead of loading ``config.data`` (e.g.
    a text dataset's vocabulary read back from a checkpoint, for sampling).
    ``devices``, if given, are the devices of the run's mesh instead of all
    of them (e.g. one device of several, or a subset to compare with).
    """
    step_lib.split_host_cpu(config.get("cpu_devices", 0))
    validate(config, devices)
    mesh = step_lib.mesh_of(config, devices)
    step_lib.single_thread_lapack(mesh)
    distributed.check_same_config(config_lib.to_dict(config))
    if dataset is None:
        # Process 0 first: it prepares what is missing on disk (a TFDS
        # dataset from manual_dir); the others then read it.
        dataset = distributed.chief_first(
            lambda: data_lib.load_dataset(config.data), "load_dataset")
    dataset = subsets.select(dataset, config.data)
    check_data(config, dataset)
    try:
        task = make_task(config, dataset)
        optimizer, schedule = task.make_optimizer()
        example = task.example_batch(dataset)

        def init_state():
            return task.init_state(step_lib.root_key(config.seed, "init"),
                                   step_lib.root_key(config.seed, "train"),
                                   example, optimizer)

        abstract = jax.eval_shape(init_state)
    except (config_lib.ConfigError, data_lib.DatasetError):
        raise
    except ValueError as e:
        # A model or task refusing a config value (e.g. an architecture that
        # does not fit the data's shape): a usage error, one line.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise config_lib.ConfigError(
            f"{config.data.name}: {first} (check the --config overrides)") from e
    shardings = step_lib.state_shardings(abstract, mesh,
                                         min_size=config.mesh.fsdp_min_size)
    init_state_fn = jax.jit(step_lib.under_mesh(init_state, mesh),
                            out_shardings=shardings)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract, shardings)
    checkpointer = ckpt_lib.Checkpointer(
        workdir, config.train.keep_checkpoints,
        allow_fresh_start=config.train.get("allow_fresh_start", False))
    return Run(config, workdir, mesh, shardings, dataset, task, optimizer,
               schedule, abstract, init_state_fn, checkpointer)


def make_train_iterator(run: Run):
    """The training batches of ``run``: seeded from ``config.seed`` alone
    (perturbed where ``config.data.perturb_rate`` asks, see
    ``genjax.data.subsets``)."""
    iterator = run.task.make_train_iterator(
        run.dataset, data_seed(run.config.seed), jax.process_index(),
        jax.process_count())
    rate = float(run.config.data.get("perturb_rate", 0.0) or 0.0)
    if rate:
        iterator = subsets.PerturbedIterator(iterator, rate, data_seed(run.config.seed),
                                             jax.process_index())
    return iterator


def make_step(run: Run):
    """The jitted, data-parallel train step of ``run``'s task."""
    return step_lib.make_update_step(run.task.make_update(run.optimizer),
                                     run.mesh, schedule=run.schedule,
                                     state_sharding=run.state_sharding)


def restore(run: Run):
    """``(step, state, data_state)`` from the latest usable checkpoint, or
    None; warns about config keys that changed since it was written."""
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
        return None
    step, state, data_state, saved_config = restored
    changes = config_lib.diff(saved_config, config_lib.to_dict(run.config))
    if changes:
        log.warning("resuming with a config that differs from the checkpoint's: %s",
                    "; ".join(changes))
    return step, state, data_state
