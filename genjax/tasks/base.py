"""The abstract task: what the one training loop needs from a model family.

A task binds a pure Linen model to its pure objective, its evaluation and its
sampler (the role of ``vdm/experiment.py``'s abstract experiment). The loop in
``genjax.train.loop`` jits and shards these functions; tasks never touch
devices or files.

Most tasks only implement the abstract methods: the defaults below train
``loss_fn`` with one optimiser built from ``config.train``. A task with another
update rule (a GAN's two players, say) overrides ``make_optimizer``,
``init_state``, ``make_update`` and ``inference_params`` instead of changing
the loop.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import ml_collections
import numpy as np

from genjax import data as data_lib
from genjax.evaluate import images as image_lib
from genjax.train import step as step_lib
from genjax.train.state import TrainState, build_optimizer


def has_labels(dataset_info) -> bool:
    """Whether the dataset's examples carry class labels (for a
    class-conditional model and the class-based sample metrics)."""
    return "label" in dataset_info.element_spec and bool(dataset_info.num_classes)


def conditional_classes(config, dataset_info) -> int:
    """The number of classes a model conditions on: the dataset's when
    ``model.class_conditional`` is true (a one-line ConfigError if the data
    has no labels), else 0."""
    if not config.model.get("class_conditional", False):
        return 0
    if not has_labels(dataset_info):
        from genjax.config import ConfigError  # pylint: disable=import-outside-toplevel
        raise ConfigError(
            f"model.class_conditional=True needs labels; dataset "
            f"{config.data.name!r} has none: set it to false")
    return int(dataset_info.num_classes)


class Task(abc.ABC):
    """One model family on one kind of data.

    Subclasses implement pure functions of ``(params, batch, rng)``; ``batch``
    is a dict of arrays with a leading batch axis (``'image'`` float32 in
    [0, 1], ``'label'`` int32, ...).
    """

    # Metrics shown on the progress line (without the ``train/`` prefix).
    progress_keys: tuple[str, ...] = ("loss",)

    def __init__(self, config: ml_collections.ConfigDict, dataset_info):
        self.config = config
        # genjax.data.Dataset without its arrays' contents mattering here:
        # element_spec, num_classes and kind describe the data.
        self.dataset_info = dataset_info

    @abc.abstractmethod
    def init_params(self, rng: jax.Array, example_batch: dict) -> Any:
        """Initial parameters from a batch of the right shapes."""

    def loss_fn(self, params, batch: dict, rng: jax.Array):
        """``(loss, metrics)``: the scalar minimised and scalars to log.

        Used by the default ``make_update``; a task with its own update rule
        (a GAN) need not define it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} defines neither loss_fn nor make_update")

    @abc.abstractmethod
    def eval_fn(self, params, batch: dict, rng: jax.Array, *, final: bool) -> dict:
        """Per-example metrics ``{name: [B]}``, averaged by the loop.

        The loop calls it on one example at a time (a batch of one, vmapped
        over the eval batch) with that example's own key, derived from its
        index in the split, so that a metric depends on the data and the
        seed only, never on ``eval.batch_size``. ``final`` selects the
        reported protocol (e.g. 1000 importance samples) over the cheaper
        one used during training.
        """

    @abc.abstractmethod
    def sample_fn(self, params, rng: jax.Array, num_samples: int):
        """``num_samples`` new examples (images: float32 [N,H,W,C] in [0,1])."""

    def sample_quality_samplers(self, final: bool) -> dict:
        """Samplers the sample-quality protocol judges: ``{name: fn(params,
        rng, num_samples)}``. The metrics of name ``''`` are ``eval/...``,
        of any other ``eval/<name>/...``. The default: ``sample_fn`` alone;
        ``final`` is True at the end of training and in ``--mode=eval``."""
        del final
        return {"": self.sample_fn}

    def figures(self, params, batch: dict, rng: jax.Array) -> dict[str, np.ndarray]:
        """Extra named image grids (float [N,H,W,C] rows) made from test data.

        Returns ``{name: (images, ncols)}``; the loop writes each as a PNG
        strip. The default has none.
        """
        del params, batch, rng
        return {}

    def summarize_eval(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the averaged ``eval/...`` ones and the
        sample-quality metrics (e.g. perplexity, which is a function of the
        mean loss, not a mean itself; the best of several samplers)."""
        return metrics

    def render_samples(self, samples, dataset) -> dict:
        """How ``sample_fn``'s output is shown: ``{name: picture or text}``,
        a picture being a float ``[H, W, C]`` in [0, 1] or uint8. The loop
        writes each under ``samples/`` and to TensorBoard. The default: images
        ``[N, H, W, C]`` as one grid; 2-D points ``[N, 2]`` of a points
        dataset as a scatter over as many test points."""
        samples = np.asarray(samples)
        if samples.ndim == 4:
            return {"samples": image_lib.make_grid(samples)}
        if dataset.kind == "points" and samples.ndim == 2 and samples.shape[1] == 2:
            reference = dataset.arrays("test")["points"][:len(samples)]
            return {"samples": image_lib.scatter_image(samples, reference)}
        return {}

    def default_num_samples(self) -> int:
        """How many samples ``--mode=sample`` draws without ``--num_samples``."""
        return 64

    # A task's own ``--mode`` names beside train/eval/sample (e.g. a diffusion
    # model's "inpaint"), each run by ``run_mode``.
    extra_modes: tuple[str, ...] = ()

    def run_mode(self, mode: str, ctx) -> Any:
        """Runs the task's own ``mode`` on a restored checkpoint; ``ctx`` is a
        ``genjax.train.modes.ModeContext`` (the run, the inference params,
        their step, and atomic writers for pictures and arrays)."""
        del ctx
        raise NotImplementedError(f"{type(self).__name__} has no mode {mode!r}")

    # ------------------------------------------------------------------
    # The data the task reads. Defaults: a dataset of examples (images,
    # points), shuffled in epochs; evaluation over the whole test split.

    def example_batch(self, dataset) -> dict:
        """Zeros shaped like a batch of one, for ``init_params``."""
        return {k: np.zeros((1,) + v.shape[1:], v.dtype)
                for k, v in dataset.arrays("train").items()}

    def make_train_iterator(self, dataset, seed: int, process_index: int,
                            process_count: int):
        """This process's training batches, with ``get_state``/``set_state``."""
        return data_lib.TrainIterator(
            dataset.arrays("train"), self.config.train.batch_size, seed=seed,
            process_index=process_index, process_count=process_count)

    def eval_batches(self, dataset, batch_size: int, *, final: bool):
        """``(global batch, mask)`` pairs that ``eval_fn`` is averaged over:
        the whole test split, or its first ``eval.num_examples``."""
        del final
        arrays = dataset.arrays("test")
        limit = self.config.eval.get("num_examples", 0)
        if limit:
            arrays = {k: v[:limit] for k, v in arrays.items()}
        return data_lib.eval_batches(arrays, batch_size)

    def extra_eval_passes(self, final: bool) -> tuple[str, ...]:
        """Names of evaluation passes beside the main one, each averaged over
        its own examples (``extra_eval_batches``, ``extra_eval_fn``): a metric
        too costly for the whole test split (a diffusion model's variational
        bound) gets its own subset, while ``eval_fn`` still covers the whole
        split. Example ``i`` of every pass gets the key of the main pass's
        example ``i``. The default: none."""
        del final
        return ()

    def extra_eval_batches(self, name: str, dataset, batch_size: int):
        """``(global batch, mask)`` pairs of the extra pass ``name``."""
        raise NotImplementedError(f"{type(self).__name__} has no eval pass {name!r}")

    def extra_eval_fn(self, name: str, params, batch: dict, rng: jax.Array) -> dict:
        """Per-example metrics ``{key: [B]}`` of the extra pass ``name``."""
        raise NotImplementedError(f"{type(self).__name__} has no eval pass {name!r}")

    # ------------------------------------------------------------------
    # How the task is trained; the defaults are one gradient-descent player.

    def make_optimizer(self):
        """``(optimizer, schedule)``; whatever ``init_state``/``make_update`` take."""
        return build_optimizer(self.config.train)

    def init_state(self, init_rng: jax.Array, train_rng: jax.Array,
                   example_batch: dict, optimizer) -> TrainState:
        """The state at step 0 (pure: the loop jits it)."""
        params = self.init_params(init_rng, example_batch)
        return TrainState.create(params, optimizer, train_rng,
                                 use_ema=self.config.train.ema_decay > 0)

    def training_loss(self):
        """The loss the update differentiates: ``loss_fn`` computed in
        ``train.compute_dtype`` (``genjax.train.step.mixed_precision``)."""
        return step_lib.mixed_precision(self.loss_fn, self.config.train.compute_dtype)

    def make_update(self, optimizer):
        """``update(state, batch, rng) -> (state, metrics)``; see
        ``genjax.train.step.make_update_step``."""
        return step_lib.gradient_update(self.training_loss(), optimizer,
                                        ema_decay=self.config.train.ema_decay)

    def inference_params(self, state: TrainState, use_ema: bool):
        """What ``eval_fn``, ``sample_fn`` and ``figures`` get as ``params``."""
        return state.eval_params(use_ema)

    def check_divergence(self, metrics: dict[str, float], step: int) -> str | None:
        """A message if training has failed in a way finite numbers can show.

        Called at every log step with the last step's metrics (host floats,
        no ``train/`` prefix). Non-finite losses and gradient norms are
        checked by the loop for every task.
        """
        del metrics, step
        return None
