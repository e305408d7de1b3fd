"""The diffusion task: a denoising network, the epsilon objective, samplers.

Training minimises the simplified objective of Ho et al. 2020 (eq. 14, or
its x0 / v variants) with one optimiser and an EMA of the parameters, which
evaluation and sampling use. Evaluation reports the test denoising loss
during training; at the end (and with ``--mode=eval``) the variational bound
in bits per dimension on ``eval.bound_num_examples`` test images, and the
shared sample-quality metrics of the configured sampler and of every sampler
in ``eval.compare_samplers``, each with its sampling time.

Class conditioning (``model.class_conditional``) trains one network for
p(x | y) and p(x): labels are replaced by a null label with probability
``diffusion.label_dropout``, so samples can use classifier-free guidance
(Ho & Salimans 2022) with ``sample.guidance_scale`` w:
``eps = (1 + w) eps(x, y) - w eps(x)``. Inpainting always uses the
unconditional model (the null label). On a dataset without labels a
conditional config trains the unconditional model, with one warning.
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax import data as data_lib
from genjax.config import ConfigError, check_choice
from genjax.evaluate import images as image_lib
from genjax.evaluate import sample_quality
from genjax.models import unet as unet_lib
from genjax.objectives import diffusion as diff
from genjax.objectives import likelihood
from genjax.objectives import samplers as samplers_lib
from genjax.tasks.base import Task, has_labels
from genjax.train import step as step_lib

ARCHITECTURES = ("unet", "mlp")
SAMPLERS = ("ddpm", "ddim") + tuple(n for n in samplers_lib.SAMPLERS if n != "ddim")
MASKS = ("center", "left", "right", "top", "bottom", "noise")


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every diffusion experiment, with Ho et al.'s
    defaults where they have one."""
    config = config_lib.base_config(data_name=data_name)
    m = config.model = ml_collections.ConfigDict()
    m.architecture = "unet"  # unet (images) | mlp (2-D points)
    m.channels = 64
    m.channel_mults = (1, 2, 2)
    m.num_res_blocks = 2
    m.attention_resolutions = (14,)  # feature-map sides with self-attention
    m.dropout = 0.1
    m.num_groups = 32
    m.remat = False  # unet: recompute each block in the backward pass
    m.hidden = 128  # mlp
    m.num_layers = 3  # mlp
    m.class_conditional = False

    d = config.diffusion = ml_collections.ConfigDict()
    d.num_timesteps = 1000
    d.schedule = "linear"  # linear | cosine
    d.beta_start = 1e-4
    d.beta_end = 0.02
    d.prediction = "eps"  # eps | x0 | v
    d.variance = "small"  # small (beta~_t) | large (beta_t)
    # Training loss weights: none (Ho et al.) | min_snr (Hang et al. 2023).
    d.loss_weighting = "none"
    d.min_snr_gamma = 5.0
    # Probability of training on the null label (classifier-free guidance).
    d.label_dropout = 0.1

    s = config.sample
    # ddpm (ancestral, all T steps) | ddim | dpm2 | dpm3 (DPM-Solver++) |
    # heun (EDM) | adaptive (Tsit5); "name:steps" picks the steps too.
    s.sampler = "ddim"
    s.steps = 50  # network evaluations of ddim/dpm2/dpm3; levels of heun
    s.eta = 0.0
    s.guidance_scale = 0.0  # w of classifier-free guidance; 0: none
    # (lo, hi): guide only at noise levels sigma/alpha in (lo, hi]; (): all.
    s.guidance_interval = ()
    s.clip = True  # clip the predicted x_0 to the data range while sampling

    config.inpaint = ml_collections.ConfigDict()
    config.inpaint.mask = "center"  # center | left | right | top | bottom | noise
    config.inpaint.resample = 5  # RePaint's resampling rounds per step (1: none)
    config.inpaint.num_images = 8

    # Ho et al. 2020: Adam 2e-4, warmup 5000, clipping at 1, EMA 0.9999.
    t = config.train
    t.optimizer = "adam"
    t.learning_rate = 2e-4
    t.warmup_steps = 5000
    t.grad_clip_norm = 1.0
    t.ema_decay = 0.9999

    config.eval.use_ema = True
    # Test images the final variational bound is computed on (every one of
    # the T steps is evaluated for each); 0 skips the bound.
    config.eval.bound_num_examples = 200
    # Samplers judged beside sample.sampler at the end, each "name" or
    # "name:steps" (e.g. "ddpm", "dpm2:10").
    config.eval.compare_samplers = ()
    config.eval.sample_quality = sample_quality.default_protocol()
    return config


def smoke_preset(config: ml_collections.ConfigDict) -> None:
    """The ``smoke`` preset of every diffusion experiment: a tiny network, 20
    steps of a 50-step diffusion that log, evaluate, sample and checkpoint."""
    smoke_network_and_training(config)
    config.diffusion.num_timesteps = 50
    config.sample.steps = 10
    config.eval.bound_num_examples = 50
    config.inpaint.num_images = 4
    config.inpaint.resample = 2


def smoke_network_and_training(config: ml_collections.ConfigDict) -> None:
    """The part of the smoke preset every diffusion-like family shares: a
    tiny network trained 20 steps, 100 samples judged."""
    m = config.model
    m.channels, m.channel_mults, m.num_res_blocks = 8, (1, 2), 1
    m.attention_resolutions = ()
    m.num_groups = 4
    m.hidden, m.num_layers = 32, 2
    config.train.batch_size = 16
    config.train.warmup_steps = 5
    config.train.learning_rate = 1e-3
    config.train.ema_decay = 0.9
    config_lib.smoke_schedule(config)
    config.eval.batch_size = 50
    q = config.eval.sample_quality
    q.num_samples, q.num_samples_during_training, q.kid_subset_size = 100, 0, 50
    q.batch_size = 100


def cpu_preset(config: ml_collections.ConfigDict, num_steps: int) -> None:
    """The ``cpu`` preset of the image experiments: a U-Net at a quarter of
    Ho et al.'s width with one block per level, no dropout,
    class-conditional, trained ``num_steps`` steps of 64 at 1e-3 with a
    short warmup and cosine decay; 1,000 samples judged at the end, the
    bound on 50 test images. The CPU is split into 2 devices
    (``cpu_devices``): on 2 cores a step of 64 28x28 images takes 0.26 s
    as two data-parallel halves against 0.35 s as one device using both
    cores (1.3 s at 32 channels as one device)."""
    config.cpu_devices = 2
    m = config.model
    m.channels, m.channel_mults, m.num_res_blocks = 16, (1, 2, 2), 1
    m.num_groups, m.dropout = 8, 0.0
    m.class_conditional = True
    t = config.train
    t.batch_size, t.learning_rate, t.warmup_steps = 64, 1e-3, 200
    t.lr_schedule, t.min_lr_ratio, t.ema_decay = "cosine", 0.05, 0.995
    t.num_steps = num_steps
    t.log_every, t.eval_every, t.checkpoint_every = 100, num_steps // 2, 500
    config.eval.batch_size = 50
    if "bound_num_examples" in config.eval:
        config.eval.bound_num_examples = 50
    q = config.eval.sample_quality
    q.num_samples, q.num_samples_during_training, q.batch_size = 1000, 200, 500


def toy2d_preset(config: ml_collections.ConfigDict, preset: str, smoke) -> None:
    """What the 2-D toy experiments of the diffusion-like families share
    (``ddpm_toy2d``, ``score_toy2d``): an MLP of 3 layers of 128 trained on
    batches of 256 at 1e-3 with an EMA of 0.999, 2,000 samples judged at the
    end; ``smoke`` (the family's smoke preset, then batches of 64 and 100
    samples judged), ``cpu`` (5,000 steps, cosine decay, about a minute) or
    ``paper`` (no paper trains on these: 50,000 steps of a 4-layer MLP of
    256). Call it after the experiment's own settings: the smoke preset
    overrides some of them."""
    m = config.model
    m.architecture, m.hidden, m.num_layers = "mlp", 128, 3
    t = config.train
    t.batch_size, t.learning_rate, t.warmup_steps, t.ema_decay = 256, 1e-3, 100, 0.999
    config.eval.batch_size = 1000
    config.sample.num_samples = 1000
    q = config.eval.sample_quality
    q.num_samples, q.num_samples_during_training, q.batch_size = 2000, 1000, 2000
    if preset == "smoke":
        smoke(config)
        t.batch_size = 64
        config.eval.batch_size = 50
        q.num_samples, q.batch_size = 100, 100
    elif preset == "cpu":
        t.num_steps, t.lr_schedule, t.min_lr_ratio = 5000, "cosine", 0.05
        t.log_every, t.eval_every, t.checkpoint_every = 250, 2500, 1000
    elif preset == "paper":
        m.hidden, m.num_layers = 256, 4
        t.num_steps, t.lr_schedule = 50_000, "cosine"
        t.log_every, t.eval_every, t.checkpoint_every = 1000, 10_000, 5000
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: smoke, cpu, paper")


def parse_sampler(spec: str, names, key: str = "sampler"):
    """``(name, steps or None)`` of a sampler spec ``name`` or
    ``name:steps``; a one-line ConfigError naming ``key`` otherwise."""
    name, _, steps = str(spec).partition(":")
    check_choice(key, name, names)
    if not steps:
        return name, None
    if not steps.isdigit() or int(steps) < 1:
        raise ConfigError(f"{key}={spec!r}: the steps after ':' must be a positive "
                          f"integer, e.g. {name}:10")
    return name, int(steps)


class DiffusionTask(Task):
    """A DDPM (Ho et al. 2020) on images or 2-D points."""

    progress_keys = ("loss", "grad_norm")
    # The config section of the noising process (label dropout, prediction).
    process_key = "diffusion"

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        m, s = config.model, config.sample
        self.process = config[self.process_key]
        check_choice("model.architecture", m.architecture, ARCHITECTURES)
        parse_sampler(s.sampler, self.sampler_names, "sample.sampler")
        for spec in config.eval.compare_samplers:
            parse_sampler(spec, self.sampler_names, "eval.compare_samplers")
        if s.steps < 1:
            raise ConfigError(f"sample.steps={s.steps} must be at least 1")
        if not 0.0 <= self.process.label_dropout <= 1.0:
            raise ConfigError(
                f"{self.process_key}.label_dropout={self.process.label_dropout} "
                "must be in [0, 1]")
        self.setup_process()
        kind = dataset_info.kind
        self.field = {"image": "image", "points": "points"}.get(kind)
        if self.field is None:
            raise ConfigError(
                f"the diffusion task needs an image or points dataset; data.name="
                f"{config.data.name!r} is of kind {kind!r}")
        wanted = "unet" if kind == "image" else "mlp"
        if m.architecture != wanted:
            raise ConfigError(
                f"model.architecture={m.architecture!r} does not fit {kind} data "
                f"({config.data.name!r}); set --config.model.architecture={wanted}")
        self.num_classes = 0
        # The guidance actually used: none where the model is unconditional.
        self.guidance_scale = s.guidance_scale
        if m.class_conditional and not has_labels(dataset_info):
            # A conditional recipe (e.g. the cpu preset) on the user's own,
            # unlabelled images: the unconditional model is what can be
            # learned. The config is left as given, so a checkpoint's model
            # config still matches its preset on resume.
            guidance = (f" and sample.guidance_scale={s.guidance_scale} are"
                        if s.guidance_scale else " is")
            logging.getLogger("genjax").warning(
                "data.name=%r has no labels: model.class_conditional=True%s "
                "ignored; the model is trained and sampled unconditionally",
                config.data.name, guidance)
            self.guidance_scale = 0.0
        elif m.class_conditional:
            self.num_classes = int(dataset_info.num_classes)
        elif s.guidance_scale:
            raise ConfigError(
                f"sample.guidance_scale={s.guidance_scale} needs "
                "model.class_conditional=True; set it to 0")
        self.shape = tuple(dataset_info.element_spec[self.field])
        self.num_dims = int(np.prod(self.shape))
        if kind == "image":
            self.model = unet_lib.UNet(
                channels=m.channels, channel_mults=tuple(m.channel_mults),
                num_res_blocks=m.num_res_blocks,
                attention_resolutions=tuple(m.attention_resolutions),
                dropout=m.dropout, num_classes=self.num_classes,
                num_groups=m.num_groups, remat=m.remat)
            try:  # A side the levels cannot halve is a config problem.
                jax.eval_shape(
                    lambda: self.model.init(jax.random.key(0),
                                            jnp.zeros((1,) + self.shape),
                                            jnp.zeros((1,)), train=False))
            except ValueError as e:
                raise ConfigError(f"data.name={config.data.name!r}: {e}") from None
        else:
            self.model = unet_lib.MLPDenoiser(hidden=m.hidden,
                                              num_layers=m.num_layers,
                                              num_classes=self.num_classes)

    def setup_process(self):
        """Checks the ``diffusion`` section and builds the discrete schedule
        (``self.schedule``) and its path for the samplers (``self.path``)."""
        config, d, s = self.config, self.config.diffusion, self.config.sample
        check_choice("diffusion.schedule", d.schedule, diff.SCHEDULES)
        check_choice("diffusion.prediction", d.prediction, diff.PREDICTIONS)
        check_choice("diffusion.variance", d.variance, diff.VARIANCES)
        check_choice("diffusion.loss_weighting", d.loss_weighting, diff.WEIGHTINGS)
        if d.min_snr_gamma <= 0:
            raise ConfigError(f"diffusion.min_snr_gamma={d.min_snr_gamma} must be > 0")
        check_choice("inpaint.mask", config.inpaint.mask, MASKS)
        if d.num_timesteps < 2:
            raise ConfigError(
                f"diffusion.num_timesteps={d.num_timesteps} must be at least 2")
        if not 1 <= s.steps <= d.num_timesteps:
            raise ConfigError(
                f"sample.steps={s.steps} must be between 1 and "
                f"diffusion.num_timesteps={d.num_timesteps}")
        if config.inpaint.resample < 1:
            raise ConfigError(
                f"inpaint.resample={config.inpaint.resample} must be at least 1")
        if config.eval.bound_num_examples < 0:
            raise ConfigError(
                f"eval.bound_num_examples={config.eval.bound_num_examples} must "
                "be >= 0 (0 skips the bound)")
        self.schedule = diff.make_schedule(d.schedule, d.num_timesteps,
                                           d.beta_start, d.beta_end)
        self.path = samplers_lib.DiscretePath(np.asarray(self.schedule.alphas_cumprod))

    # ------------------------------------------------------------------
    # Data in the model's range.

    def to_model(self, x):
        """Images in [0, 1] -> [-1, 1]; points are used as they are."""
        return x * 2.0 - 1.0 if self.field == "image" else x

    def from_model(self, x):
        """The inverse of ``to_model``."""
        return (x + 1.0) * 0.5 if self.field == "image" else x

    def null_labels(self, num: int):
        """The null label (index ``num_classes``) for ``num`` examples, or None."""
        if not self.num_classes:
            return None
        return jnp.full((num,), self.num_classes, jnp.int32)

    def denoiser(self, params, labels=None, guidance_scale: float = 0.0,
                 rng=None):
        """``denoise_fn(x_t, t)`` with ``params`` (and labels) bound.

        ``rng`` turns dropout on (training); ``guidance_scale`` w > 0
        combines the conditional and unconditional outputs, ``(1 + w)
        out(x, y) - w out(x)``, in one pass over a doubled batch (the
        combination of raw outputs equals that of eps for all three
        parametrisations, which are affine in the output with the same
        ``x_t``). With ``sample.guidance_interval = (lo, hi)`` the guidance
        applies only where EDM's noise level ``sigma / alpha`` lies in
        ``(lo, hi]`` (Kynkaanniemi et al. 2024); elsewhere the conditional
        output is used alone.
        """
        train = rng is not None
        rngs = {"dropout": rng} if train else {}

        # The network casts its input (float32, from the noise schedule) to
        # its parameters' dtype: bfloat16 inside a mixed-precision training
        # loss (Task.training_loss), float32 everywhere else.
        model = self.model.clone(dtype=step_lib.params_dtype(params))

        def apply(x, t, y):
            return model.apply({"params": params}, x, t.astype(jnp.float32),
                               y, train=train, rngs=rngs)

        if not guidance_scale:
            return lambda x, t: apply(x, t, labels)

        interval = tuple(self.config.sample.get("guidance_interval", ()))

        def guided(x, t):
            n = x.shape[0]
            both = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                         jnp.concatenate([labels, self.null_labels(n)]))
            cond, uncond = both[:n], both[n:]
            w = jnp.full((n,), guidance_scale, cond.dtype)
            if interval:  # Guidance only at noise levels in (lo, hi].
                level = self.model_sigma_tilde(t)
                w = jnp.where((level > interval[0]) & (level <= interval[1]), w, 0.0)
            w = w.reshape((n,) + (1,) * (x.ndim - 1))
            return (1.0 + w) * cond - w * uncond

        return guided

    def model_sigma_tilde(self, t_model):
        """EDM's noise level ``sigma / alpha`` at the network's time input
        (here the step index)."""
        return self.path.sigma_tilde((t_model.astype(jnp.float32) + 1.0)
                                     / self.schedule.num_steps)

    # ------------------------------------------------------------------
    # Task interface.

    def init_params(self, rng, example_batch):
        x = jnp.zeros((1,) + self.shape, jnp.float32)
        labels = self.null_labels(1)
        return self.model.init({"params": rng, "dropout": rng}, x,
                               jnp.zeros((1,)), labels, train=False)["params"]

    def _train_labels(self, batch, rng):
        """The batch's labels, each replaced by the null label with
        probability ``diffusion.label_dropout``; None if unconditional."""
        if not self.num_classes:
            return None
        labels = batch["label"]
        drop = jax.random.bernoulli(rng, self.process.label_dropout,
                                    labels.shape)
        return jnp.where(drop, self.num_classes, labels)

    def loss_fn(self, params, batch, rng):
        label_rng, drop_rng, loss_rng = jax.random.split(rng, 3)
        x0 = self.to_model(batch[self.field])
        labels = self._train_labels(batch, label_rng)
        denoise = self.denoiser(params, labels, rng=drop_rng)
        d = self.config.diffusion
        loss, _ = diff.denoising_loss(denoise, self.schedule, x0, loss_rng, d.prediction,
                                      weighting=d.loss_weighting,
                                      min_snr_gamma=d.min_snr_gamma)
        return jnp.mean(loss), {}

    def eval_fn(self, params, batch, rng, *, final):
        """The denoising loss at a random step (unconditional for a
        conditional model), on the whole test split."""
        del final
        loss_rng, _ = jax.random.split(rng)  # The second half: the bound's.
        x0 = self.to_model(batch[self.field])
        denoise = self.denoiser(params, self.null_labels(x0.shape[0]))
        loss, _ = diff.denoising_loss(denoise, self.schedule, x0, loss_rng,
                                      self.config.diffusion.prediction)
        return {"loss": loss}

    def extra_eval_passes(self, final):
        """At the end, the variational bound on the first
        ``eval.bound_num_examples`` test examples (it costs T network passes
        per example)."""
        return ("bound",) if final and self.config.eval.bound_num_examples > 0 else ()

    def extra_eval_batches(self, name, dataset, batch_size):
        del name
        n = self.config.eval.bound_num_examples
        arrays = {k: v[:n] for k, v in dataset.arrays("test").items()}
        return data_lib.eval_batches(arrays, batch_size)

    def extra_eval_fn(self, name, params, batch, rng):
        """The variational bound (unconditional): nats per example and bits
        per dimension, with its prior, diffusion and decoder terms."""
        del name
        d = self.config.diffusion
        _, bound_rng = jax.random.split(rng)
        x0 = self.to_model(batch[self.field])
        denoise = self.denoiser(params, self.null_labels(x0.shape[0]))
        bound = diff.variational_bound(denoise, self.schedule, x0, bound_rng,
                                       prediction=d.prediction,
                                       variance=d.variance)
        out = {f"bound_{k}": v for k, v in bound.items()}
        if self.field == "image":
            # The discretised decoder makes the bound a discrete NLL.
            out["bits_per_dim"] = likelihood.bits_per_dim(bound["nll_bound"],
                                                          self.num_dims)
        return out

    def ood_scores(self, params, images, rng, num_terms: int = 20) -> dict:
        """``{"nll": [B] nats}``, higher = odder: an unbiased estimate of the
        unconditional variational bound from ``num_terms`` of its terms
        (``diffusion.variational_bound_estimate``; the full bound costs T
        network passes an example)."""
        d = self.config.diffusion
        x0 = self.to_model(images)
        denoise = self.denoiser(params, self.null_labels(x0.shape[0]))
        return {"nll": diff.variational_bound_estimate(
            denoise, self.schedule, x0, rng, num_terms=min(num_terms, d.num_timesteps - 1),
            prediction=d.prediction, variance=d.variance)}

    # ------------------------------------------------------------------
    # Sampling: every sampler of genjax.objectives.samplers on the model's
    # data prediction, plus the family's own (ancestral DDPM here).

    # The samplers of this family; a spec is a name or "name:steps".
    sampler_names = SAMPLERS

    def x0_fn(self, params, labels=None, guidance_scale: float = 0.0):
        """The guided network as the samplers' data prediction ``x0_fn(x,
        t)``, ``t`` on the path's continuous time, ``x_0`` clipped to the
        image range if ``sample.clip``."""
        denoise = self.denoiser(params, labels, guidance_scale)
        return diff.discrete_x0_fn(denoise, self.path, self.config.diffusion.prediction,
                                   self.clip)

    @property
    def clip(self) -> bool:
        """Clip predicted ``x_0`` to [-1, 1]: images only (points have no
        fixed range)."""
        return bool(self.config.sample.clip) and self.field == "image"

    def run_sampler(self, name: str, params, labels, x_T, rng, steps: int,
                    keep_path: bool = False):
        """``(x_0, nfe)`` (and with ``keep_path`` every step, ``(x_0, path,
        nfe)``) of sampler ``name`` from ``x_T`` in the model's space."""
        s, d = self.config.sample, self.config.diffusion
        if name in ("ddpm", "ddim"):
            denoise = self.denoiser(params, labels, self.guidance_scale)
            common = dict(prediction=d.prediction, clip=self.clip, x_T=x_T,
                          keep_path=keep_path)
            if name == "ddpm":
                out = diff.ddpm_sample(denoise, self.schedule, x_T.shape, rng,
                                       variance=d.variance, **common)
                nfe = self.schedule.num_steps
            else:
                out = diff.ddim_sample(denoise, self.schedule, x_T.shape, rng,
                                       num_steps=steps, eta=s.eta, **common)
                nfe = len(diff.ddim_timesteps(self.schedule.num_steps, steps))
            return (out[0], out[1], nfe) if keep_path else (out, nfe)
        return self.path_sampler(name, params, labels, x_T, rng, steps, keep_path)

    def path_sampler(self, name, params, labels, x_T, rng, steps, keep_path):
        """A sampler of ``genjax.objectives.samplers`` on the data prediction."""
        if keep_path:
            raise ConfigError(f"sampler {name!r} does not keep its path; use ddim")
        if name == "adaptive" and labels is not None:
            # One solve per example: each with its own label.
            def x0_fn(x, t, rows):
                return self.x0_fn(params, rows, self.guidance_scale)(x, t)
            return samplers_lib.adaptive(x0_fn, self.path, x_T, rng, per_example=labels)
        x0_fn = self.x0_fn(params, labels, self.guidance_scale)
        return samplers_lib.SAMPLERS[name](x0_fn, self.path, x_T, rng, num_steps=steps)

    def sample(self, params, rng, num_samples: int, sampler: str | None = None,
               *, labels=None, x_T=None, keep_path: bool = False,
               with_nfe: bool = False):
        """``num_samples`` draws in the data's range with ``sampler`` (default
        ``sample.sampler``), a name of ``sampler_names`` or ``name:steps``
        (``sample.steps`` otherwise): ``ddpm`` (ancestral, all T steps),
        ``ddim`` (``sample.eta``), ``dpm2``/``dpm3`` (DPM-Solver++),
        ``heun`` (EDM) or ``adaptive`` (Tsit5).

        A class-conditional model draws labels uniformly unless ``labels``
        (``[num_samples]``) are given, and guides with
        ``sample.guidance_scale``. ``x_T`` fixes the starting noise (unit
        scale; the path's prior scale is applied here); ``keep_path`` also
        returns every step's ``x`` (in the data's range), ``[steps,
        num_samples, ...]``; ``with_nfe`` returns ``(samples, {'nfe':
        ...})``, the sampler's network evaluations per sample.
        """
        name, steps = parse_sampler(sampler or self.config.sample.sampler,
                                    self.sampler_names)
        steps = steps or self.config.sample.steps
        label_rng, noise_rng, start_rng = jax.random.split(rng, 3)
        if self.num_classes and labels is None:
            labels = jax.random.randint(label_rng, (num_samples,), 0,
                                        self.num_classes)
        shape = (num_samples,) + self.shape
        if x_T is None:  # Drawn here so that its batch is data-parallel.
            x_T = jax.random.normal(start_rng, shape)
        x_T = step_lib.shard_batch_axis(x_T * self.path.prior_std)
        out = self.run_sampler(name, params, labels, x_T, noise_rng, steps, keep_path)
        if keep_path:
            return self.from_model(out[0]), self.from_model(out[1])
        x, nfe = out
        x = self.from_model(x)
        if with_nfe:
            return x, {"nfe": jnp.broadcast_to(jnp.asarray(nfe, jnp.float32),
                                               (num_samples,))}
        return x

    def sample_fn(self, params, rng, num_samples):
        return self.sample(params, rng, num_samples)

    def sample_quality_samplers(self, final: bool) -> dict:
        """``sample.sampler`` (metric keys ``eval/...``) and, at the end,
        each of ``eval.compare_samplers`` (``eval/<name>/...``, ``name:steps``
        written ``name_steps``); each also reports its ``nfe``."""
        samplers = {"": lambda p, r, n: self.sample(p, r, n, with_nfe=True)}
        if final:
            for spec in self.config.eval.compare_samplers:
                if spec != self.config.sample.sampler:
                    samplers[spec.replace(":", "_")] = (
                        lambda p, r, n, spec=spec: self.sample(p, r, n, spec,
                                                               with_nfe=True))
        return samplers

    # ------------------------------------------------------------------
    # Editing and figures.

    def inpaint_mask(self, num: int) -> np.ndarray:
        """``inpaint.mask`` as float32 ``[num, H, W, 1]``: 1 where pixels are
        kept, 0 where the model fills them in."""
        h, w = self.shape[:2]
        mask = np.ones((num, h, w, 1), np.float32)
        kind = self.config.inpaint.mask
        if kind == "center":
            mask[:, h // 4:h - h // 4, w // 4:w - w // 4] = 0.0
        elif kind == "left":
            mask[:, :, :w // 2] = 0.0
        elif kind == "right":
            mask[:, :, w // 2:] = 0.0
        elif kind == "top":
            mask[:, :h // 2] = 0.0
        elif kind == "bottom":
            mask[:, h // 2:] = 0.0
        else:  # noise: half the pixels, at random from a fixed seed.
            rng = np.random.default_rng(0)
            mask[...] = (rng.random((num, h, w, 1)) < 0.5).astype(np.float32)
        return mask

    def inpaint(self, params, images, mask, rng):
        """Images in [0, 1] with the pixels where ``mask`` is 0 filled in by
        the unconditional model (RePaint, ``inpaint.resample`` rounds)."""
        d = self.config.diffusion
        denoise = self.denoiser(params, self.null_labels(images.shape[0]))
        # Split over the devices like a sampler's batch (the noise drawn for
        # it follows), instead of inpainting every image on every device.
        known = step_lib.shard_batch_axis(self.to_model(jnp.asarray(images)))
        mask = step_lib.shard_batch_axis(jnp.asarray(mask))
        x = diff.inpaint(denoise, self.schedule, known, mask, rng,
                         resample=self.config.inpaint.resample,
                         prediction=d.prediction, variance=d.variance,
                         clip=self.config.sample.clip)
        return self.from_model(x)

    def forward_noising(self, images, rng, num_levels: int = 10):
        """``q(x_t | x_0)`` of each image at ``num_levels`` evenly spaced
        steps, ``[num_images * num_levels, H, W, C]`` in [0, 1] (clipped)."""
        steps = np.round(np.linspace(0, self.schedule.num_steps - 1,
                                     num_levels)).astype(np.int32)
        x0 = self.to_model(jnp.asarray(images))
        rows = []
        for i, image in enumerate(x0):
            t = jnp.asarray(steps)
            noise = jax.random.normal(jax.random.fold_in(rng, i),
                                      (num_levels,) + image.shape)
            xt = diff.q_sample(self.schedule, jnp.broadcast_to(
                image, (num_levels,) + image.shape), t, noise)
            rows.append(jnp.clip(self.from_model(xt), 0.0, 1.0))
        return jnp.concatenate(rows)

    # ------------------------------------------------------------------
    # How samples look, and the inpainting mode.

    extra_modes = ("inpaint",)

    def run_mode(self, mode, ctx):
        """``inpaint``: fills a masked region (``inpaint.mask``) of the first
        ``inpaint.num_images`` test images with the restored model. Writes
        ``samples/inpaint.png`` (rows: the originals, the masked inputs, the
        inpainted images) and ``inpainted.npy`` (float32 ``[N, H, W, C]`` in
        [0, 1]); returns the inpainted images."""
        if mode != "inpaint":
            return super().run_mode(mode, ctx)
        if self.field != "image":
            raise ConfigError(
                f"--mode=inpaint needs an image dataset; data.name="
                f"{self.config.data.name!r} holds {self.field}")
        test = ctx.run.dataset.arrays("test")["image"]
        num = min(self.config.inpaint.num_images, len(test))
        images = test[:num]
        mask = self.inpaint_mask(num)
        fn = ctx.run.jit(self.inpaint)
        t0 = time.perf_counter()
        filled = np.asarray(jax.device_get(
            fn(ctx.params, images, mask, ctx.run.key("sample"))), np.float32)
        seconds = time.perf_counter() - t0
        masked = images * mask + 0.5 * (1.0 - mask)  # grey where unknown
        grid = image_lib.make_grid(np.concatenate([images, masked, filled]),
                                   ncols=num)
        path = ctx.write_picture("inpaint", grid)
        ctx.write_array("inpainted", filled)
        logging.getLogger("genjax").info(
            "inpainted %d test images (mask %s, %d resampling rounds) from "
            "step %d in %.1f s; wrote %s", num, self.config.inpaint.mask,
            self.config.inpaint.resample, ctx.step, seconds, path)
        return filled

    def figures(self, params, batch, rng):
        """The forward noising of a few test images."""
        del params
        if self.field != "image":
            return {}
        images = np.asarray(batch["image"][:4])
        return {"forward_noising": (np.asarray(self.forward_noising(images, rng)),
                                    10)}
