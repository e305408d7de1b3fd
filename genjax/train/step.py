"""The step factory: any pure objective -> one jitted, data-parallel step.

Parallelism is expressed with ``jax.jit`` over a mesh of every device with
two axes, ``data`` x ``fsdp`` (``config.mesh.fsdp``, 1 by default): the batch
is sharded over both axes with ``NamedSharding``; the state is replicated
(``fsdp = 1``, pure data parallelism) or each large array of it is sharded
along ``fsdp`` (``state_shardings``, big_vision's rule), and XLA inserts the
gradient all-reduce (and, with ``fsdp``, the all-gathers of the parameters
and the reduce-scatters of their gradients). This is what the
design card calls the "pmapped" step, in the current API (``jax.pmap`` is in
maintenance mode); the same code runs on 1 CPU, 8 simulated CPUs, and GPU or
TPU hosts.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genjax.config import ConfigError, check_choice
from genjax.train.state import TrainState

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
# The batch is split over every device: both mesh axes.
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)

# Purposes for ``fold_in`` on the root key: one independent stream each.
PURPOSE = {"init": 0, "train": 1, "eval": 2, "sample": 3, "figures": 4,
           "sample_quality": 5}


def make_mesh(devices=None, fsdp: int = 1) -> Mesh:
    """A ``data`` x ``fsdp`` mesh over ``devices`` (default: all devices of
    all hosts), with ``fsdp`` devices along the second axis.

    Raises:
      ConfigError: ``fsdp`` does not divide the number of devices.
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    n = devices.size
    if isinstance(fsdp, bool) or not isinstance(fsdp, (int, np.integer)) or (
            fsdp < 1 or n % fsdp):
        valid = [d for d in range(1, n + 1) if n % d == 0]
        raise ConfigError(f"mesh.fsdp={fsdp} must divide the {n} devices; "
                          f"use one of {valid}")
    return Mesh(devices.reshape(n // int(fsdp), int(fsdp)), BATCH_AXES)


def mesh_of(config, devices=None) -> Mesh:
    """``make_mesh`` with the config's ``mesh.fsdp``."""
    return make_mesh(devices, fsdp=config.mesh.fsdp)


def state_shardings(abstract_state, mesh: Mesh, *, min_size: int):
    """The sharding of every array of ``abstract_state`` (shapes suffice).

    With an ``fsdp`` axis of size k > 1, an array of at least ``min_size``
    elements is split k ways along its largest dimension that k divides
    (big_vision's FSDP rule); smaller arrays, and those no dimension of
    which k divides, are replicated. Parameters, their optimiser moments and
    their EMA copy have the same shapes, so they are sharded alike.
    """
    k = mesh.shape[FSDP_AXIS] if FSDP_AXIS in mesh.axis_names else 1
    repl = replicated(mesh)

    def rule(x):
        shape = tuple(getattr(x, "shape", ()))
        if k == 1 or not shape or int(np.prod(shape)) < min_size:
            return repl
        for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
            if shape[dim] % k == 0:
                spec = [None] * len(shape)
                spec[dim] = FSDP_AXIS
                return NamedSharding(mesh, P(*spec))
        return repl

    return jax.tree.map(rule, abstract_state)


def bytes_per_device(tree) -> int:
    """The bytes of ``tree``'s arrays (or ShapeDtypeStructs with shardings)
    that each device holds (shards are even, so every device holds as much)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = tuple(x.shape)
        sharding = getattr(x, "sharding", None)
        if sharding is not None:
            shape = tuple(sharding.shard_shape(shape))
        total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
    return total


_FORCE_FLAG = "--xla_force_host_platform_device_count"


def split_host_cpu(count: int) -> int:
    """Makes JAX's CPU platform ``count`` devices (``config.cpu_devices``).

    On a CPU-only host, one device per core can beat one device using every
    core: XLA:CPU parallelises many small ops poorly, while data parallelism
    over host devices keeps each core busy with its own share of the batch.
    The ddpm_mnist and gpt_shakespeare_char cpu presets use 2 (measured by
    ``python -m genjax.tools.benchmark``; the VAE, DCGAN and 2-D diffusion
    steps are slower split, so their presets keep 0). The setting only
    concerns the CPU platform: on a GPU or TPU host the mesh is made of the
    accelerators and the CPU device count does not matter.

    ``0`` leaves JAX's default (one CPU device, or what ``XLA_FLAGS`` says).
    An explicit ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` wins
    over the config (logged), as does a JAX that has already started with
    another count (a notebook that ran JAX code first; a warning). Returns
    the CPU device count that applies (``0`` when left to ``XLA_FLAGS``).

    Raises:
      ConfigError: ``count`` is negative.
    """
    if count < 0:
        raise ConfigError(f"cpu_devices={count} must be 0 (JAX's default) or a "
                         "positive number of CPU devices, e.g. 2")
    if count == 0:
        return 0
    if _FORCE_FLAG in os.environ.get("XLA_FLAGS", ""):
        logging.getLogger(__name__).info(
            "cpu_devices=%d ignored: XLA_FLAGS sets %s", count, _FORCE_FLAG)
        return 0
    if jax.config.jax_num_cpu_devices == count:
        return count
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already started in this process.
        have = len(jax.devices("cpu"))
        if have != count:
            logging.getLogger(__name__).warning(
                "cpu_devices=%d has no effect: JAX already started with %d CPU "
                "device(s); set it before the first JAX operation", count, have)
        return have
    return count


def steps_must_sync(mesh: Mesh) -> bool:
    """True when each step must finish before the next is dispatched.

    XLA:CPU runs the collectives of a mesh of several CPU devices in one
    process (``cpu_devices`` or ``XLA_FLAGS``) as blocking rendezvous on the
    shared intra-op thread pool. With steps in flight back to back, a device
    can reach the next step's all-reduce while the pool's threads are all
    taken, and the run hangs until XLA aborts it (seen here with jax 0.10.2
    on 2 cores: the gpt_shakespeare_char smoke preset with ``cpu_devices=2``
    stuck within 1,500 steps). Waiting for each step costs nothing
    measurable on a CPU, where the host has no device queue to keep full
    (``genjax.tools.benchmark``: synchronised and pipelined steps take the
    same time). Accelerators and single-device meshes keep async dispatch.
    """
    return several_cpu_devices(mesh)


def several_cpu_devices(mesh: Mesh) -> bool:
    """True for a mesh of two or more CPU devices (one process's devices as
    XLA:CPU threads), where ``steps_must_sync`` and ``single_thread_lapack``
    apply."""
    return mesh.devices.size > 1 and all(
        d.platform == "cpu" for d in mesh.devices.flat)


def single_thread_lapack(mesh: Mesh) -> bool:
    """On a mesh of several CPU devices, runs jaxlib's LAPACK kernels
    (``eigh``, ``cholesky``, ...) on one thread each; True if it did.

    jaxlib's CPU LAPACK calls the OpenBLAS that SciPy bundles, whose level-3
    routines serialise on one global lock and spin their own worker threads.
    With one XLA device per core each running a decomposition at once (a
    full-covariance M-step on every device), those threads contend for the
    cores and the lock: a step of eight 784x784 ``eigh`` calls on 8 CPU
    devices took 40 s or more, when it finished at all, against 4 s with
    one thread per call (measured here, jax 0.10.2, 2 cores). The devices
    already keep the cores busy, so one thread per call loses nothing.
    NumPy's own OpenBLAS (a separate library) is left alone, as is every
    single-device run.
    """
    if not several_cpu_devices(mesh):
        return False
    import importlib  # pylint: disable=import-outside-toplevel
    import threadpoolctl  # pylint: disable=import-outside-toplevel
    importlib.import_module("scipy.linalg")  # loads the OpenBLAS to set
    done = False
    for lib in threadpoolctl.ThreadpoolController().lib_controllers:
        if f"scipy.libs{os.sep}" in lib.filepath or "/scipy/" in lib.filepath:
            lib.set_num_threads(1)
            done = True
    return done


def batch_axes(mesh) -> tuple[str, ...]:
    """The mesh axes the batch is split over (those of ``BATCH_AXES`` it has)."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device (``data`` and ``fsdp``)."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def under_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """``fn`` traced under ``mesh``'s abstract mesh (``jax.sharding``).

    Every function the loop jits (the train step, evaluation, sampling,
    inpainting) is wrapped by this, so that code inside it can ask
    ``jax.sharding.get_abstract_mesh()`` for the ``data`` axis
    (``shard_batch_axis``). ``use_abstract_mesh`` may be entered while
    tracing, unlike ``jax.set_mesh``, so this also holds for ``.lower()``.
    """
    abstract = mesh.abstract_mesh

    def traced(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(abstract):
            return fn(*args, **kwargs)

    return traced


def shard_batch_axis(x: jax.Array) -> jax.Array:
    """Constrains ``x``'s leading axis to the ``data`` axis of the mesh traced
    under (``under_mesh``).

    For arrays made inside a jitted function rather than fed in (a GAN's
    noise, a sampler's initial noise): without the constraint XLA may
    choose to compute them, and everything made from them, on every device.
    Outside a mesh with a ``data`` axis, or if the devices do not divide its
    leading axis, it returns ``x`` unchanged.
    """
    mesh = jax.sharding.get_abstract_mesh()
    axes = () if mesh.empty else batch_axes(mesh)
    if not axes:
        return x
    # A batch the devices do not divide (a sampler's odd chunk) stays whole.
    if x.ndim == 0 or x.shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
        return x
    return jax.lax.with_sharding_constraint(x, P(axes))


def root_key(seed: int, purpose: str) -> jax.Array:
    """The key of one purpose; ``config.seed`` alone decides every draw."""
    return jax.random.fold_in(jax.random.key(seed), PURPOSE[purpose])


def check_batch_divides(batch_size: int, what: str, mesh: Mesh) -> None:
    """Raises ConfigError if ``batch_size`` does not split over devices/hosts."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if batch_size % n_dev or batch_size % n_proc:
        lo = batch_size - batch_size % n_dev
        raise ConfigError(
            f"{what}={batch_size} does not divide over {n_dev} devices "
            f"({n_proc} processes); use a multiple of {n_dev}, e.g. "
            f"{max(lo, n_dev)} or {lo + n_dev}")


def to_global(batch: dict, mesh: Mesh) -> dict:
    """This process's slice of a batch -> global arrays sharded on ``data``."""
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def ema_update(ema, params, decay: float):
    """``decay * ema + (1 - decay) * params``, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def accumulated_value_and_grad(loss_fn: Callable, accum_steps: int) -> Callable:
    """``value_and_grad(loss_fn, has_aux=True)`` over ``accum_steps`` micro-batches.

    The batch (leading axis ``B``, divisible by ``accum_steps``) is split into
    micro-batches that are processed one after another by ``lax.scan``, so
    only one micro-batch's activations are alive at a time; the loss, the
    metrics and the gradients are averaged over them, which equals one pass
    over the whole batch when ``loss_fn`` is a mean over examples. Micro-batch
    ``j`` holds rows ``j, j + k, j + 2k, ...`` (``k = accum_steps``): each
    device's contiguous share of a data-sharded batch contributes equally to
    every micro-batch. Micro-batch ``j`` gets the key ``fold_in(rng, j)``.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        return grad_fn

    def accumulated(params, batch, rng):
        def split(x):
            if x.shape[0] % accum_steps:
                raise ValueError(
                    f"batch of {x.shape[0]} does not split into {accum_steps} "
                    "micro-batches")
            rows = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
            return jnp.swapaxes(rows, 0, 1)

        micro = jax.tree.map(split, batch)

        def body(total, xs):
            j, mb = xs
            mb = jax.tree.map(shard_batch_axis, mb)
            out = grad_fn(params, mb, jax.random.fold_in(rng, j))
            return jax.tree.map(jnp.add, total, out), None

        shapes = jax.eval_shape(grad_fn, params,
                                jax.tree.map(lambda x: x[0], micro), rng)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
        return jax.tree.map(lambda x: x / accum_steps, total)

    return accumulated


# ``train.compute_dtype``: what the networks compute in while training.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
        else x, tree)


def params_dtype(params):
    """The dtype of ``params``' floating arrays (bfloat16 inside a
    ``mixed_precision`` loss): what a network's other inputs are cast to."""
    leaves = [x for x in jax.tree.leaves(params)
              if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return jnp.result_type(leaves[0]) if leaves else jnp.dtype(jnp.float32)


def mixed_precision(fn: Callable, compute_dtype: str = "float32") -> Callable:
    """``fn`` (a loss: ``(params, ..., batch, rng) -> (loss, aux)``) computed
    in ``compute_dtype`` from float32 master weights.

    Every floating array of every argument (parameters, model state, batch)
    is cast to ``compute_dtype`` on the way in, so the networks (which take
    their dtype from their inputs and parameters) and the objective compute
    in it; every floating output (the loss, metrics, new batch statistics)
    is cast back to float32. The gradients flow through the casts, so they,
    the parameters and the optimiser state stay float32: the usual mixed
    precision of accelerators (bfloat16 needs no loss scaling). Keys and
    integer arrays pass through. ``float32``: ``fn`` itself.
    """
    check_choice("train.compute_dtype", compute_dtype, tuple(COMPUTE_DTYPES))
    if compute_dtype == "float32":
        return fn
    dtype = COMPUTE_DTYPES[compute_dtype]

    def cast_fn(*args):
        out = fn(*(_cast_floats(a, dtype) for a in args))
        return _cast_floats(out, jnp.float32)

    return cast_fn


def gradient_update(loss_fn: Callable, optimizer: optax.GradientTransformation,
                    *, ema_decay: float = 0.0, accum_steps: int = 1) -> Callable:
    """The one-player update: a gradient step on ``loss_fn``.

    Args:
      loss_fn: pure ``(params, batch, rng) -> (loss, metrics)``; ``loss`` is
        the scalar mean over the global batch that is minimised.
      optimizer: the optax transformation.
      ema_decay: if > 0, ``state.ema_params`` tracks the parameters.
      accum_steps: gradient accumulation: the batch is processed in this
        many micro-batches (see ``accumulated_value_and_grad``), one
        optimiser update per step.

    Returns:
      ``update(state, batch, rng) -> (state, metrics)`` for ``make_update_step``.
    """
    def update(state: TrainState, batch, rng):
        grad_fn = accumulated_value_and_grad(loss_fn, accum_steps)
        (loss, metrics), grads = grad_fn(state.params, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None and ema_decay > 0:
            ema = ema_update(ema, params, ema_decay)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                       param_norm=optax.tree.norm(params))
        return state.replace(params=params, opt_state=opt_state,
                             ema_params=ema), metrics

    return update


def make_update_step(update_fn: Callable, mesh: Mesh, *,
                     schedule: optax.Schedule | None = None,
                     state_sharding=None) -> Callable:
    """Any update rule -> ``step(state, batch) -> (state, metrics)``, jitted.

    This is the part every family shares: the step's key is derived from the
    step number (never carried, so a resumed run draws what an uninterrupted
    one does), the batch is sharded over the ``data`` axis and the state
    replicated, the state's buffers are donated, and the step counter and
    learning rate are handled here.

    Args:
      update_fn: ``(state, batch, rng) -> (state, metrics)``, e.g.
        ``gradient_update`` (one objective) or
        ``genjax.train.adversarial.two_player_update`` (GANs). It must not
        touch ``state.step``.
      mesh: from ``make_mesh``.
      schedule: the learning-rate schedule, logged as ``learning_rate``.
      state_sharding: the state's shardings (``state_shardings``), or None
        for a replicated state.
    """
    def step(state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        new_state, metrics = update_fn(state, batch, rng)
        metrics = dict(metrics)
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        return new_state.replace(step=state.step + 1), metrics

    state_sharding = replicated(mesh) if state_sharding is None else state_sharding
    return jax.jit(
        under_mesh(step, mesh),
        in_shardings=(state_sharding, data_sharding(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,),
    )


def example_keys(key: jax.Array, index: jax.Array) -> jax.Array:
    """One key per example, ``fold_in(key, index[i])``: evaluation randomness
    (binarisation, importance samples, diffusion steps) is a function of the
    example's position in its split and the seed, never of the batch size."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


def per_example(eval_fn: Callable) -> Callable:
    """``eval_fn(params, batch, rng) -> {name: [B]}`` applied to each example
    on its own (a batch of one) with that example's key, vmapped over the
    batch: ``(params, batch, keys [B]) -> {name: [B]}``."""
    def one(params, example, key):
        values = eval_fn(params, jax.tree.map(lambda x: x[None], example), key)
        return {k: jnp.reshape(v, ()) for k, v in values.items()}

    return jax.vmap(one, in_axes=(None, 0, 0))


def make_eval_step(eval_fn: Callable, mesh: Mesh) -> Callable:
    """Returns ``eval_step(params, batch, mask, index, key) -> sums``, jitted.

    ``eval_fn(params, batch, rng)`` returns a dict of per-example values
    ``[B]``; it is applied to each example with the key of its index in the
    split (``per_example``, ``example_keys``), and the step returns the
    masked sums (and ``count``), taken inside the jitted function, so that
    the caller divides once and the average is exact over a split whose
    size the batch does not divide, whatever the batch size.
    """
    values_fn = per_example(eval_fn)

    def eval_step(params, batch, mask, index, key):
        values = values_fn(params, batch, example_keys(key, index))
        sums = {k: jnp.sum(v * mask) for k, v in values.items()}
        sums["count"] = jnp.sum(mask)
        return sums

    # The parameters keep the shardings they come with (replicated, or
    # sharded along ``fsdp``); the batch, mask and index arrive sharded.
    return jax.jit(under_mesh(eval_step, mesh), out_shardings=replicated(mesh))
