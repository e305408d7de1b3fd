"""The flow task: a normalizing flow trained by exact maximum likelihood.

On 8-bit images (``MultiScaleFlow``: RealNVP or Glow) the pixels are
uniformly dequantised and bits/dim follows ``genjax.objectives.flow``; on
2-D points (``PointFlow``) the density is the points' own and the NLL is in
nats per point. Sampling is one pass through the inverse flow, with a
temperature; the exact per-example log-likelihood is ``log_likelihood``.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax.config import ConfigError, check_choice
from genjax.evaluate import sample_quality
from genjax.models import flows as flows_lib
from genjax.objectives import flow as flow_obj
from genjax.objectives import likelihood
from genjax.tasks.base import Task, conditional_classes
from genjax.train import step as step_lib

log = logging.getLogger("genjax")

IMAGE_ARCHITECTURES = flows_lib.ARCHITECTURES
POINT_ARCHITECTURES = ("coupling",)


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every flow experiment, with neutral defaults."""
    config = config_lib.base_config(data_name=data_name)
    m = config.model = ml_collections.ConfigDict()
    # realnvp | glow (images); coupling (points).
    m.architecture = "glow"
    m.coupling = "affine"  # affine | additive | spline
    m.num_scales = 2  # images: scales (each but the last factors out half)
    m.steps_per_scale = 8  # glow: flow steps per scale
    m.hidden = 64  # channels (images) or units (points) of each coupling's network
    m.num_blocks = 1  # images: residual blocks; points: hidden layers
    m.num_layers = 8  # points: couplings
    m.num_bins = 8  # spline couplings: bins
    m.spline_bound = 3.0  # spline couplings: the splines' interval [-B, B]
    m.scale_bound = 2.0  # affine couplings: |log-scale| < this (soft clamp)
    # images: the logit pre-transform's margin. RealNVP's 0.05 suits natural
    # images; MNIST flows (MAF, FFJORD) use 1e-6, which leaves MNIST's
    # background (dequantised zeros) spread out in logit space instead of
    # squeezed into a sliver the couplings must expand: a small Glow
    # reached 1.66 bits/dim in 400 steps with it (and a split prior)
    # against 2.84 with 0.05.
    m.logit_alpha = 1e-6
    # images: a learned prior for each factored-out half given the kept
    # half (Glow), instead of N(0, I) (RealNVP).
    m.split_prior = False
    # images: recompute each coupling network in the backward pass.
    m.remat = False
    # A class-conditional flow: the prior of the latent is N(mu_y, sigma_y^2)
    # with a learned mean and scale per class (Glow's class-conditional
    # prior, Kingma & Dhariwal 2018, sec. 5); samples take uniform labels.
    m.class_conditional = False
    # ActNorm's data-dependent initialisation sees this many training
    # examples (a seed-fixed draw) once, before the train state is built.
    m.init_batch_size = 512

    t = config.train
    t.optimizer = "adam"
    t.learning_rate = 1e-3
    t.warmup_steps = 200
    t.grad_clip_norm = 100.0

    config.sample.temperature = 1.0
    # Dequantisation draws of the importance-weighted bound reported at the
    # end (``eval/bits_per_dim_iw``); 0 or 1 skips it.
    config.eval.dequant_samples = 0
    # Temperatures the sample-quality protocol judges beside
    # ``sample.temperature`` (``eval/t<T>/...``).
    config.eval.temperatures = ()
    config.eval.sample_quality = sample_quality.default_protocol()
    return config


def mnist_config(architecture: str) -> ml_collections.ConfigDict:
    """What the MNIST flow experiments share: ``architecture`` (realnvp or
    glow) with affine couplings on 2 scales (28x28 halves twice), eval in
    batches of 500, 100 sample images, the sample-quality protocol at the end
    only, at temperature 1 and 0.6 and 0.8."""
    config = base_config("mnist")
    m = config.model
    m.architecture = architecture
    m.coupling = "affine"
    m.num_scales = 2
    config.eval.batch_size = 500
    config.sample.num_samples = 100
    config.eval.temperatures = (0.6, 0.8)
    config.eval.sample_quality.num_samples_during_training = 0
    return config


def image_smoke_preset(config: ml_collections.ConfigDict) -> None:
    """The ``smoke`` preset's schedule and evaluation for the image flows
    (the network's size is each experiment's): 20 steps of 32 after a
    5-step warmup, ActNorm initialised from 64 images, one temperature
    beside 1, 100 judged samples."""
    config.model.init_batch_size = 64
    config.train.batch_size = 32
    config.train.warmup_steps = 5
    config_lib.smoke_schedule(config)
    # One evaluation, at the end: a pass over MNIST's 10,000 test images
    # costs more than the 20 steps (the digits test evaluates mid-run).
    config.train.eval_every = 20
    config.eval.temperatures = (0.7,)
    q = config.eval.sample_quality
    q.num_samples, q.batch_size, q.kid_subset_size = 100, 100, 50


def _temperature_name(t: float) -> str:
    return f"t{t:g}"


class FlowTask(Task):
    """RealNVP / Glow on images, coupling flows on 2-D points.

    Config keys: ``model.*`` (see ``base_config``), ``sample.temperature``,
    ``eval.{dequant_samples, temperatures, sample_quality}``.
    """

    progress_keys = ("loss", "grad_norm")

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        m = config.model
        kind = dataset_info.kind
        self.field = {"image": "image", "points": "points"}.get(kind)
        if self.field is None:
            raise ConfigError(
                f"the flow task needs an image or points dataset; data.name="
                f"{config.data.name!r} is of kind {kind!r}")
        check_choice("model.coupling", m.coupling, flows_lib.COUPLINGS)
        valid = IMAGE_ARCHITECTURES if kind == "image" else POINT_ARCHITECTURES
        if m.architecture not in valid:
            raise ConfigError(
                f"model.architecture={m.architecture!r} does not fit {kind} data "
                f"({config.data.name!r}); valid: {', '.join(valid)}")
        for key in ("hidden", "num_blocks", "num_layers", "num_bins",
                    "num_scales", "steps_per_scale", "init_batch_size"):
            if int(m[key]) < 1:
                raise ConfigError(f"model.{key}={m[key]} must be at least 1")
        if not 0.0 < m.logit_alpha < 0.5:
            raise ConfigError(f"model.logit_alpha={m.logit_alpha} must be in (0, 0.5)")
        temps = (config.sample.temperature, *config.eval.temperatures)
        if any(not t > 0 for t in temps):
            raise ConfigError(
                f"temperatures must be positive: sample.temperature="
                f"{config.sample.temperature}, eval.temperatures="
                f"{tuple(config.eval.temperatures)}")
        self.shape = tuple(dataset_info.element_spec[self.field])
        self.num_dims = int(np.prod(self.shape))
        self.num_classes = conditional_classes(config, dataset_info)
        if kind == "image":
            self.model = flows_lib.MultiScaleFlow(
                image_shape=self.shape, architecture=m.architecture,
                num_scales=m.num_scales, steps_per_scale=m.steps_per_scale,
                hidden=m.hidden, num_blocks=m.num_blocks, coupling=m.coupling,
                num_bins=m.num_bins, spline_bound=m.spline_bound,
                scale_bound=m.scale_bound, logit_alpha=m.logit_alpha,
                split_prior=bool(m.split_prior), remat=m.remat)
            try:  # A side the scales cannot halve is a config problem.
                jax.eval_shape(lambda: self.model.init(
                    jax.random.key(0), jnp.full((1,) + self.shape, 0.5),
                    method=self.model.forward))
            except ValueError as e:
                raise ConfigError(f"data.name={config.data.name!r}: {e}") from None
        else:
            self.model = flows_lib.PointFlow(
                dims=self.num_dims, num_layers=m.num_layers, hidden=m.hidden,
                num_hidden_layers=m.num_blocks, coupling=m.coupling,
                num_bins=m.num_bins, spline_bound=m.spline_bound,
                scale_bound=m.scale_bound)
        # Mixed precision (train.compute_dtype): the same flow, its coupling
        # networks computing in bfloat16 for the training loss only. Not the
        # generic cast of every input (step.mixed_precision): the logit
        # transform and the log-determinants need float32 (in bfloat16 a
        # pixel near 1 rounds to 1, whose logit is infinite).
        self.train_model = self.model
        if config.train.compute_dtype != "float32":
            self.train_model = self.model.clone(
                compute_dtype=step_lib.COMPUTE_DTYPES[config.train.compute_dtype])

    # ------------------------------------------------------------------
    # The flow as pure functions of params.

    # A class-conditional flow keeps its prior's per-class mean and log-scale
    # beside the flow's parameters, under "class_prior": N(z; mu_y, sigma_y^2)
    # is N((z - mu_y) / sigma_y; 0, I) / prod sigma_y, i.e. one more affine
    # bijector at the end of the flow, so the objectives stay unchanged.

    def _flow_params(self, params):
        return {k: v for k, v in params.items() if k != "class_prior"}

    def _labels(self, batch):
        return batch["label"] if self.num_classes else None

    def forward(self, params, labels=None, *, train: bool = False):
        """``x -> (z, log_det)`` with ``params`` (and the labels of a
        class-conditional flow) bound; ``train``: the training loss's model
        (``train.compute_dtype``)."""
        model = self.train_model if train else self.model

        def fn(x):
            z, log_det = model.apply({"params": self._flow_params(params)}, x,
                                     method=model.forward)
            if not self.num_classes:
                return z, log_det
            mean = params["class_prior"]["mean"][labels]
            log_scale = params["class_prior"]["log_scale"][labels]
            return (z - mean) * jnp.exp(-log_scale), log_det - jnp.sum(log_scale, axis=-1)
        return fn

    def inverse(self, params, labels=None):
        """``z -> (x, log_det)`` with ``params`` (and labels) bound."""
        def fn(z):
            extra = 0.0
            if self.num_classes:
                log_scale = params["class_prior"]["log_scale"][labels]
                z = z * jnp.exp(log_scale) + params["class_prior"]["mean"][labels]
                extra = jnp.sum(log_scale, axis=-1)
            x, log_det = self.model.apply({"params": self._flow_params(params)}, z,
                                          method=self.model.inverse)
            return x, log_det + extra
        return fn

    def random_labels(self, rng, num: int):
        """Uniform labels ``[num]`` of a class-conditional flow, else None."""
        if not self.num_classes:
            return None
        return jax.random.randint(rng, (num,), 0, self.num_classes)

    def log_likelihood(self, params, batch_values, rng, labels=None):
        """Exact per-example log-likelihood, ``[B]`` nats.

        Images in [0, 1] (8-bit levels): the log-probability bound of the
        discrete pixels from one uniform dequantisation draw (``rng``), i.e.
        ``log p((k + u)/256) - D ln 256``; points: the log-density."""
        if self.field == "image":
            return -flow_obj.dequantized_nll(self.forward(params, labels), batch_values,
                                             rng)
        return flow_obj.log_prob(self.forward(params, labels), batch_values)

    def anomaly_score(self, params, batch_values, rng, labels=None):
        """Negative log-likelihood per example (nats); higher = odder."""
        return -self.log_likelihood(params, batch_values, rng, labels)

    def ood_scores(self, params, batch_values, rng) -> dict:
        """``{"nll": [B] nats}``, higher = odder: the exact NLL (of the 8-bit
        pixels through one dequantisation draw, for images)."""
        return {"nll": -self.log_likelihood(params, batch_values, rng)}

    # ------------------------------------------------------------------
    # Task interface.

    def example_batch(self, dataset) -> dict:
        """A real batch for ActNorm's data-dependent initialisation:
        ``model.init_batch_size`` training examples drawn with the seed."""
        values = dataset.arrays("train")[self.field]
        n = min(int(self.config.model.init_batch_size), len(values))
        rng = np.random.default_rng([int(self.config.seed), 0xF10])
        idx = np.sort(rng.choice(len(values), size=n, replace=False))
        return {self.field: np.asarray(values[idx], np.float32)}

    def init_params(self, rng, example_batch):
        x = jnp.asarray(example_batch[self.field])
        if self.field == "image":
            deq_rng, rng = jax.random.split(rng)
            x = likelihood.uniform_dequantize(x, deq_rng)
        params = self.model.init(rng, x, method=self.model.forward)["params"]
        if self.num_classes:  # N(0, I) for every class at the start
            zeros = jnp.zeros((self.num_classes, self.num_dims), jnp.float32)
            params = dict(params, class_prior={"mean": zeros, "log_scale": zeros})
        return params

    def _nll(self, params, values, rng, labels=None, *, train: bool = False):
        """Per-example NLL in the task's unit: bits/dim (images) or nats."""
        forward = self.forward(params, labels, train=train)
        if self.field == "image":
            nll = flow_obj.dequantized_nll(forward, values, rng)
            return flow_obj.bits_per_dim(nll, values), nll
        nll = -flow_obj.log_prob(forward, values)
        return nll, nll

    def training_loss(self):
        # Mixed precision lives in train_model (see __init__), not in a cast
        # of the loss's inputs.
        return self.loss_fn

    def loss_fn(self, params, batch, rng):
        loss_per, nll = self._nll(params, batch[self.field], rng, self._labels(batch),
                                  train=True)
        loss = jnp.mean(loss_per)
        metrics = {"loss": loss}
        if self.field == "image":
            metrics["bits_per_dim"] = loss
        metrics["nll"] = jnp.mean(nll)
        return loss, metrics

    def eval_fn(self, params, batch, rng, *, final):
        values = batch[self.field]
        labels = self._labels(batch)
        loss_per, nll = self._nll(params, values, rng, labels)
        out = {"nll": nll}
        if self.field == "image":
            out["bits_per_dim"] = loss_per
            k = int(self.config.eval.dequant_samples)
            if final and k > 1:
                iw = flow_obj.importance_weighted_nll(
                    self.forward(params, labels), values, jax.random.fold_in(rng, 1), k)
                out["nll_iw"] = iw
                out["bits_per_dim_iw"] = flow_obj.bits_per_dim(iw, values)
        return out

    def sample_at(self, params, rng, num_samples, temperature, labels=None):
        """``num_samples`` samples at ``temperature``, one inverse pass (a
        class-conditional flow draws uniform labels unless given)."""
        if self.num_classes and labels is None:
            rng, label_rng = jax.random.split(rng)
            labels = self.random_labels(label_rng, num_samples)
        x = flow_obj.sample(self.inverse(params, labels), rng, num_samples, self.num_dims,
                            temperature)
        if self.field == "image":
            return flow_obj.to_pixels(x)
        return x

    def sample_fn(self, params, rng, num_samples):
        return self.sample_at(params, rng, num_samples,
                              float(self.config.sample.temperature))

    def sample_quality_samplers(self, final):
        del final
        samplers = {"": self.sample_fn}
        for t in self.config.eval.temperatures:
            if float(t) != float(self.config.sample.temperature):
                samplers[_temperature_name(float(t))] = (
                    lambda p, r, n, t=float(t): self.sample_at(p, r, n, t))
        return samplers

    def summarize_eval(self, metrics):
        """Adds ``eval/best_temperature`` (the lowest FD, or energy distance
        on points, over the temperatures judged) when several were."""
        key = "fd" if self.field == "image" else "energy_distance"
        temps = {float(self.config.sample.temperature): f"eval/{key}"}
        for t in self.config.eval.temperatures:
            if float(t) not in temps:
                temps[float(t)] = f"eval/{_temperature_name(float(t))}/{key}"
        scored = {t: metrics[k] for t, k in temps.items() if k in metrics}
        if len(scored) > 1:
            metrics = dict(metrics)
            metrics["eval/best_temperature"] = min(scored, key=scored.get)
        return metrics

    # ------------------------------------------------------------------
    # Pictures.

    def interpolate(self, params, image_a, image_b, num_steps: int = 10):
        """Images along the line between the latents of two images (each
        pixel at its bin's centre, so the path is deterministic). A
        class-conditional flow walks in the latent of its class-0 prior."""
        pair = (jnp.stack([image_a, image_b]) * 255.0 + 0.5) / 256.0
        labels = jnp.zeros((2,), jnp.int32) if self.num_classes else None
        z, _ = self.forward(params, labels)(pair)
        t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
        path = (1.0 - t) * z[0][None] + t * z[1][None]
        path_labels = jnp.zeros((num_steps,), jnp.int32) if self.num_classes else None
        x, _ = self.inverse(params, path_labels)(path)
        return flow_obj.to_pixels(x)

    def temperature_grid(self, params, rng, temperatures=(0.5, 0.7, 0.85, 1.0),
                         per_row: int = 10):
        """Rows of samples from the same noise at each temperature."""
        z = jax.random.normal(rng, (per_row, self.num_dims))
        # A class-conditional flow: one class per column.
        labels = (jnp.arange(per_row) % self.num_classes) if self.num_classes else None
        rows = [self.inverse(params, labels)(t * z)[0] for t in temperatures]
        return flow_obj.to_pixels(jnp.concatenate(rows))

    def density_grid(self, params, extent: float, size: int = 128):
        """``log p`` of 2-D points on a ``size x size`` grid over
        ``[-extent, extent]^2`` (rows run down in y, as in a picture), and
        the area of one cell."""
        coords = jnp.linspace(-extent, extent, size)
        xx, yy = jnp.meshgrid(coords, coords[::-1])
        points = jnp.stack([xx.ravel(), yy.ravel()], axis=-1)
        log_p = flow_obj.log_prob(self.forward(params), points)
        cell = (coords[1] - coords[0]) ** 2
        return log_p.reshape(size, size), cell

    def figures(self, params, batch, rng):
        """Images: an interpolation between two test images of different
        labels and samples at four temperatures; points: the density."""
        if self.field == "points":
            points = np.asarray(batch["points"])
            extent = 1.1 * float(np.percentile(np.abs(points), 99.5)) + 0.5
            log_p, _ = jax.jit(self.density_grid, static_argnums=(1, 2))(
                params, round(extent, 2), 128)
            density = np.exp(np.asarray(log_p, np.float64))
            density /= max(density.max(), 1e-30)
            colour = np.array([0.1, 0.2, 0.8])
            image = 1.0 - density[..., None] * (1.0 - colour)
            return {"density": (image[None].astype(np.float32), 1)}
        images = np.asarray(batch["image"])
        j = 1
        if "label" in batch:
            others = np.nonzero(np.asarray(batch["label"]) != batch["label"][0])[0]
            j = int(others[0]) if len(others) else 1
        interp = jax.jit(self.interpolate)(params, images[0], images[j])
        temps = jax.jit(self.temperature_grid)(params, rng)
        return {"interpolation": (np.asarray(interp), 10),
                "temperatures": (np.asarray(temps), 10)}
