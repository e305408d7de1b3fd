"""The abstract task: what the one training loop needs from a model family.

A task binds a pure Linen model to its pure objective, its evaluation and its
sampler (the role of ``vdm/experiment.py``'s abstract experiment). The loop in
``genjax.train.loop`` jits and shards these functions; tasks never touch
devices, files or optimisers.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import ml_collections
import numpy as np


class Task(abc.ABC):
    """One model family on one kind of data.

    Subclasses implement pure functions of ``(params, batch, rng)``; ``batch``
    is a dict of arrays with a leading batch axis (``'image'`` float32 in
    [0, 1], ``'label'`` int32, ...).
    """

    def __init__(self, config: ml_collections.ConfigDict, dataset_info):
        self.config = config
        # genjax.data.Dataset without its arrays' contents mattering here:
        # element_spec, num_classes and kind describe the data.
        self.dataset_info = dataset_info

    @abc.abstractmethod
    def init_params(self, rng: jax.Array, example_batch: dict) -> Any:
        """Initial parameters from a batch of the right shapes."""

    @abc.abstractmethod
    def loss_fn(self, params, batch: dict, rng: jax.Array):
        """``(loss, metrics)``: the scalar minimised and scalars to log."""

    @abc.abstractmethod
    def eval_fn(self, params, batch: dict, rng: jax.Array, *, final: bool) -> dict:
        """Per-example metrics ``{name: [B]}``, averaged by the loop.

        ``final`` selects the reported protocol (e.g. 1000 importance
        samples) over the cheaper one used during training.
        """

    @abc.abstractmethod
    def sample_fn(self, params, rng: jax.Array, num_samples: int):
        """``num_samples`` new examples (images: float32 [N,H,W,C] in [0,1])."""

    def figures(self, params, batch: dict, rng: jax.Array) -> dict[str, np.ndarray]:
        """Extra named image grids (float [N,H,W,C] rows) made from test data.

        Returns ``{name: (images, ncols)}``; the loop writes each as a PNG
        strip. The default has none.
        """
        del params, batch, rng
        return {}
