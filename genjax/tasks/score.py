"""Continuous-time diffusion: score SDEs (Song et al. 2021) and flow
matching (Lipman et al. 2023), on the diffusion task's networks, guidance and
samplers.

``ScoreSDETask`` trains a noise-predicting network ``eps(x_t, t)`` by
denoising score matching over ``t ~ U[sde.train_eps, 1]`` (the score is
``-eps / std(t)``; with ``lambda(t) = std(t)^2`` the objective is the noise
regression, ``sde.likelihood_weighting`` uses ``g(t)^2``).
``FlowMatchingTask`` regresses the velocity of the linear path. Both are
Gaussian paths, so every sampler of ``genjax.objectives.samplers`` runs on
them (DDIM, DPM-Solver++, EDM's Heun, adaptive Tsit5), beside the score
SDE's own reverse-SDE Euler-Maruyama (``em``) and predictor-corrector
(``pc``) samplers and flow matching's Euler steps (``euler``). At the end,
evaluation adds the exact likelihood through the probability-flow ODE
(instantaneous change of variables, Hutchinson's trace estimate, adaptive
Tsit5, uniform dequantisation) in bits per dimension on
``eval.likelihood_num_examples`` test images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax import data as data_lib
from genjax.config import ConfigError, check_choice
from genjax.models.flows import standard_normal_log_prob
from genjax.objectives import diffusion as diff
from genjax.objectives import flow_matching as fm
from genjax.objectives import likelihood
from genjax.objectives import samplers as samplers_lib
from genjax.objectives import sde as sde_lib
from genjax.tasks import diffusion


def _common_config(data_name: str) -> ml_collections.ConfigDict:
    """The diffusion task's model, training, sampling and evaluation keys
    without its discrete process, inpainting and bound."""
    config = diffusion.base_config(data_name)
    del config["diffusion"]
    del config["inpaint"]
    del config.eval["bound_num_examples"]
    config.sample.sampler = "dpm2"
    config.sample.steps = 20
    # Test images whose likelihood the probability-flow ODE computes at the
    # end (each an adaptive solve with a Jacobian-vector product per
    # evaluation); 0 skips it.
    config.eval.likelihood_num_examples = 100
    config.eval.likelihood_probes = 1  # Hutchinson probes per example
    config.eval.likelihood_tolerance = 1e-5  # rtol = atol of the solve
    return config


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every score-SDE experiment (Song et al.'s VP
    defaults)."""
    config = _common_config(data_name)
    p = config.sde = ml_collections.ConfigDict()
    p.kind = "vp"  # vp | subvp | ve
    p.beta_min, p.beta_max = 0.1, 20.0  # vp, subvp
    p.sigma_min, p.sigma_max = 0.01, 50.0  # ve
    p.train_eps = 1e-5  # smallest training time
    p.sample_eps = 1e-3  # where samplers stop (then denoise)
    # dsm (denoising score matching) | ssm (sliced score matching on the
    # perturbed data, Song et al. 2019, one projection per example)
    p.objective = "dsm"
    p.likelihood_weighting = False  # lambda = g^2 instead of std^2 (dsm)
    # dsm's weights: none (lambda = std^2) | min_snr (times min(SNR, gamma)
    # / SNR, Hang et al. 2023)
    p.loss_weighting = "none"
    p.min_snr_gamma = 5.0
    p.label_dropout = 0.1  # classifier-free guidance's null-label rate
    p.snr = 0.16  # predictor-corrector's Langevin signal-to-noise ratio
    # NCSN's annealed Langevin dynamics (sampler "langevin", VE only):
    # sample.steps noise levels, this many moves each, at this step size.
    p.langevin_steps_per_level = 100
    p.langevin_step_lr = 2e-5
    return config


def flow_matching_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every flow-matching experiment."""
    config = _common_config(data_name)
    p = config.flow_matching = ml_collections.ConfigDict()
    p.label_dropout = 0.1
    p.t_min = 1e-3  # the samplers' path runs on [t_min, 1 - t_min]
    # Rectified flow's reflow (Liu et al. 2023): the workdir of a finished
    # flow-matching run of the same model; the new run starts from its
    # weights and regresses the straight line from each noise to the image
    # that run's ODE draws from it (with reflow_sampler), not to a data
    # image. "": ordinary flow matching.
    p.reflow_from = ""
    p.reflow_sampler = "dpm2:10"
    config.sample.sampler = "euler"
    return config


def smoke_preset(config: ml_collections.ConfigDict) -> None:
    """The ``smoke`` preset of every continuous-time experiment."""
    diffusion.smoke_network_and_training(config)
    config.sample.steps = 5
    config.eval.likelihood_num_examples = 8
    config.eval.likelihood_tolerance = 1e-3


def mnist_preset(config: ml_collections.ConfigDict, preset: str) -> None:
    """What the MNIST score-SDE and flow-matching presets share: the smoke
    preset; ddpm_mnist's cpu recipe (guided on sigma/alpha in (1, 10],
    Kynkaanniemi et al. 2024; the likelihood on 50 test images); and Ho et
    al.'s U-Net at 28x28 for paper. Each experiment then sets its own
    guidance scale and samplers."""
    config.model.attention_resolutions = (7,)
    config.eval.batch_size = 100
    config.sample.num_samples = 100
    if preset == "smoke":
        smoke_preset(config)
    elif preset == "cpu":
        diffusion.cpu_preset(config, num_steps=2200)
        config.eval.likelihood_num_examples = 50
        config.sample.guidance_interval = (1.0, 10.0)
    elif preset == "paper":
        config.model.channels = 128
        config.train.batch_size = 128
        config.train.num_steps = 800_000
        config.train.log_every = 1000
        config.train.eval_every = 50_000
        config.train.checkpoint_every = 10_000


class ScoreSDETask(diffusion.DiffusionTask):
    """A score SDE (VE, VP or sub-VP) with a noise-predicting network."""

    process_key = "sde"
    sampler_names = tuple(samplers_lib.SAMPLERS) + ("em", "pc", "langevin")
    extra_modes = ()
    prediction = "eps"

    def setup_process(self):
        p = self.config.sde
        check_choice("sde.kind", p.kind, sde_lib.KINDS)
        check_choice("sde.objective", p.objective, ("dsm", "ssm"))
        check_choice("sde.loss_weighting", p.loss_weighting, diff.WEIGHTINGS)
        if p.loss_weighting == "min_snr" and (p.likelihood_weighting or p.min_snr_gamma <= 0):
            raise ConfigError("sde.loss_weighting='min_snr' needs sde.likelihood_weighting="
                              f"False and sde.min_snr_gamma > 0 (got {p.min_snr_gamma})")
        specs = (self.config.sample.sampler,) + tuple(self.config.eval.compare_samplers)
        if p.kind != "ve" and any(str(x).partition(":")[0] == "langevin" for x in specs):
            raise ConfigError(f"sampler 'langevin' (NCSN's annealed Langevin) needs "
                              f"sde.kind='ve', not {p.kind!r}")
        try:
            self.sde = sde_lib.SDE(p.kind, sigma_min=p.sigma_min, sigma_max=p.sigma_max,
                                   beta_min=p.beta_min, beta_max=p.beta_max)
        except ValueError as e:
            raise ConfigError(f"sde: {e}") from None
        for key in ("train_eps", "sample_eps"):
            if not 0.0 < p[key] < 0.5:
                raise ConfigError(f"sde.{key}={p[key]} must be in (0, 0.5)")
        self._check_eval()
        self.path = samplers_lib.SDEPath(self.sde, eps=p.sample_eps)

    def _check_eval(self):
        e = self.config.eval
        if e.likelihood_num_examples < 0:
            raise ConfigError(f"eval.likelihood_num_examples={e.likelihood_num_examples} "
                              "must be >= 0 (0 skips the likelihood)")
        if e.likelihood_probes < 1:
            raise ConfigError(f"eval.likelihood_probes={e.likelihood_probes} must be >= 1")

    # ------------------------------------------------------------------
    # The network on continuous time.

    def model_time(self, t):
        """What the network's time embedding is fed: ``999 t`` (the
        discrete model's step-index scale, as in Song et al.'s code; flow
        matching feeds its own time the same way)."""
        return 999.0 * t

    def network(self, params, labels=None, guidance_scale: float = 0.0, rng=None):
        denoise = self.denoiser(params, labels, guidance_scale, rng)
        return lambda x, t: denoise(x, self.model_time(t))

    def model_sigma_tilde(self, t_model):
        return self.path.sigma_tilde(t_model / 999.0)

    def score_fn(self, params, labels=None, guidance_scale: float = 0.0, rng=None):
        """``s(x, t) = -eps(x, t) / std(t)``."""
        net = self.network(params, labels, guidance_scale, rng)

        def score(x, t):
            _, std = self.sde.marginal(t)
            return -net(x, t) / sde_lib.per_example(std, x)
        return score

    def x0_fn(self, params, labels=None, guidance_scale: float = 0.0):
        net = self.network(params, labels, guidance_scale)

        def x0_fn(x, t):
            a = sde_lib.per_example(self.path.alpha(t), x)
            s = sde_lib.per_example(self.path.sigma(t), x)
            x0 = samplers_lib.x0_from_output(self.prediction, net(x, t), x, a, s)
            return jnp.clip(x0, -1.0, 1.0) if self.clip else x0
        return x0_fn

    # ------------------------------------------------------------------
    # Training and evaluation.

    def per_example_loss(self, params, x0, labels, rng, dropout_rng=None):
        """Score matching per example, averaged over dimensions: denoising
        (``dsm``) or sliced on the perturbed data (``ssm``, weighted by
        ``std(t)^2``; it equals ``dsm`` minus a constant in expectation)."""
        p = self.config.sde
        score = self.score_fn(params, labels, rng=dropout_rng)
        if p.objective == "dsm":
            gamma = p.min_snr_gamma if p.loss_weighting == "min_snr" else 0.0
            loss = sde_lib.dsm_loss(score, self.sde, x0, rng, eps=p.train_eps,
                                    likelihood_weighting=p.likelihood_weighting,
                                    min_snr_gamma=gamma)
        else:
            t_rng, z_rng, v_rng = jax.random.split(rng, 3)
            t = jax.random.uniform(t_rng, (x0.shape[0],), minval=p.train_eps, maxval=1.0)
            xt = sde_lib.perturb(self.sde, x0, t, jax.random.normal(z_rng, x0.shape))
            _, std = self.sde.marginal(t)
            loss = std**2 * sde_lib.sliced_score_matching_loss(
                lambda x: score(x, t), xt, v_rng)
        return loss / self.num_dims

    def loss_fn(self, params, batch, rng):
        label_rng, drop_rng, loss_rng = jax.random.split(rng, 3)
        x0 = self.to_model(batch[self.field])
        labels = self._train_labels(batch, label_rng)
        return jnp.mean(self.per_example_loss(params, x0, labels, loss_rng, drop_rng)), {}

    def eval_fn(self, params, batch, rng, *, final):
        """The training objective on the test split (unconditional)."""
        del final
        loss_rng, _ = jax.random.split(rng)
        x0 = self.to_model(batch[self.field])
        return {"loss": self.per_example_loss(params, x0, self.null_labels(x0.shape[0]),
                                              loss_rng)}

    def extra_eval_passes(self, final):
        """At the end, the ODE likelihood on ``eval.likelihood_num_examples``
        test examples."""
        n = self.config.eval.likelihood_num_examples
        return ("likelihood",) if final and n > 0 else ()

    def extra_eval_batches(self, name, dataset, batch_size):
        del name
        n = self.config.eval.likelihood_num_examples
        arrays = {k: v[:n] for k, v in dataset.arrays("test").items()}
        return data_lib.eval_batches(arrays, batch_size)

    # The probability-flow ODE: velocity in the model's time, its ends and
    # the prior's density (flow matching overrides these).

    def ode_velocity(self, params):
        score = self.score_fn(params, self.null_labels(1))
        return lambda x, t: sde_lib.probability_flow_drift(score, self.sde, x, t)

    def ode_ends(self) -> tuple[float, float]:
        """``(t_data, t_noise)`` of the likelihood's solve."""
        return self.config.sde.train_eps, 1.0

    def prior_log_prob(self, z):
        return self.sde.prior_log_prob(z)

    def extra_eval_fn(self, name, params, batch, rng):
        """``log p(x)`` of one uniformly dequantised image (points: of the
        point itself) by the probability-flow ODE, with Hutchinson's
        estimate of the divergence (``eval.likelihood_probes`` Rademacher
        probes) and an adaptive solve: ``ode_nll`` in nats of the density
        in the model's space, ``bits_per_dim`` on the 8-bit scale and
        ``ode_nfe``."""
        del name
        e = self.config.eval
        deq_rng, probe_rng = jax.random.split(jax.random.fold_in(rng, 1))
        x = batch[self.field]
        if self.field == "image":
            x = likelihood.uniform_dequantize(x, deq_rng)
        z = self.to_model(x)
        t_data, t_noise = self.ode_ends()
        log_p, nfe = sde_lib.adaptive_velocity_log_likelihood(
            self.ode_velocity(params), self.prior_log_prob, z, t_data, t_noise,
            probe_rng, num_probes=e.likelihood_probes, rtol=e.likelihood_tolerance,
            atol=e.likelihood_tolerance)
        out = {"ode_nll": -log_p, "ode_nfe": nfe.astype(jnp.float32)}
        if self.field == "image":
            # Model space is 2x - 1: the density on [0, 1]^D is 2^D larger.
            nll01 = -log_p - self.num_dims * np.log(2.0)
            out["bits_per_dim"] = likelihood.bits_per_dim(
                likelihood.density_to_discrete_nll(nll01, self.num_dims), self.num_dims)
        return out

    # ------------------------------------------------------------------
    # Samplers: the shared ones on the path, and the SDE's own.

    def run_sampler(self, name, params, labels, x_T, rng, steps, keep_path=False):
        if name not in ("em", "pc", "langevin"):
            return self.path_sampler(name, params, labels, x_T, rng, steps, keep_path)
        if keep_path:
            raise ConfigError(f"sampler {name!r} does not keep its path; use ddim")
        score = self.score_fn(params, labels, self.guidance_scale)
        if name == "langevin":
            return self.langevin(score, x_T, rng, steps)
        prior = lambda rng, shape: x_T  # noqa: E731  the drawn start
        sde = _StartFrom(self.sde, prior)
        eps = self.config.sde.sample_eps
        if name == "em":
            x, nfe = sde_lib.reverse_sde_sample(score, sde, rng, x_T.shape, steps, eps)
        else:
            x, nfe = sde_lib.predictor_corrector_sample(
                score, sde, rng, x_T.shape, steps, snr=self.config.sde.snr, eps=eps)
        # Song et al.'s last denoising step: the data prediction at eps.
        t = jnp.full((x.shape[0],), eps, jnp.float32)
        return self.x0_fn(params, labels, self.guidance_scale)(x, t), nfe + 1

    def langevin(self, score, x_T, rng, num_levels: int):
        """NCSN's annealed Langevin dynamics (Song & Ermon 2019) on the VE
        SDE's ``num_levels`` geometric noise levels from ``sigma_max`` to
        the samplers' smallest, started from ``x_T`` (the prior's draw);
        ends with the data prediction at the last level. Returns ``(x,
        nfe)``."""
        p, sde = self.config.sde, self.sde
        t = jnp.linspace(1.0, p.sample_eps, num_levels)
        _, sigmas = sde.marginal(t)
        log_ratio = jnp.log(sde.sigma_max / sde.sigma_min)

        def score_at_sigma(x, sigma):
            return score(x, jnp.log(sigma / sde.sigma_min) / log_ratio)

        x, nfe = sde_lib.annealed_langevin_sample(
            score_at_sigma, sigmas, rng, x_T.shape,
            steps_per_level=p.langevin_steps_per_level, step_lr=p.langevin_step_lr,
            init=x_T)
        s_last = jnp.full((x.shape[0],), sigmas[-1])
        return x + s_last.reshape((-1,) + (1,) * (x.ndim - 1)) ** 2 * score_at_sigma(
            x, s_last), nfe + 1

    def forward_noising(self, images, rng, num_levels: int = 10):
        """``x_t`` of each image at ``num_levels`` evenly spaced times in
        ``[t_min, t_max]``, ``[num_images * num_levels, H, W, C]`` in [0, 1]."""
        ts = jnp.linspace(self.path.t_min, self.path.t_max, num_levels)
        rows = []
        for i, image in enumerate(self.to_model(jnp.asarray(images))):
            noise = jax.random.normal(jax.random.fold_in(rng, i),
                                      (num_levels,) + image.shape)
            a = sde_lib.per_example(self.path.alpha(ts), noise)
            s = sde_lib.per_example(self.path.sigma(ts), noise)
            rows.append(jnp.clip(self.from_model(a * image[None] + s * noise), 0.0, 1.0))
        return jnp.concatenate(rows)


class _StartFrom:
    """An SDE whose prior draw is a given start (so the task's sharded
    ``x_T`` is used by ``sde``'s samplers)."""

    def __init__(self, sde, prior_sample):
        self._sde, self.prior_sample = sde, prior_sample

    def __getattr__(self, name):
        return getattr(self._sde, name)


class FlowMatchingTask(ScoreSDETask):
    """Conditional flow matching on the linear path (Lipman et al. 2023;
    Liu et al. 2023): the network ``v(x, tau)`` regresses ``data - noise`` at
    ``x_tau = (1 - tau) noise + tau data``. On the samplers' path (noise at
    ``t = 1 - tau``) its data prediction is ``x + t v``."""

    process_key = "flow_matching"
    sampler_names = tuple(samplers_lib.SAMPLERS) + ("euler",)
    prediction = "velocity"

    def setup_process(self):
        p = self.config.flow_matching
        if not 0.0 < p.t_min < 0.5:
            raise ConfigError(f"flow_matching.t_min={p.t_min} must be in (0, 0.5)")
        self._check_eval()
        self.path = samplers_lib.LinearPath(p.t_min, 1.0 - p.t_min)
        name, steps = diffusion.parse_sampler(
            p.reflow_sampler, ("ddim", "dpm2", "dpm3", "heun", "euler"),
            "flow_matching.reflow_sampler")
        self.reflow = ("ddim" if name == "euler" else name,
                       steps or self.config.sample.steps)
        self.teacher = None
        if p.reflow_from:
            self.teacher = self._load_teacher(p.reflow_from)

    def _load_teacher(self, workdir: str):
        """The inference parameters of the flow-matching run in ``workdir``
        (the same model config), on the host."""
        # pylint: disable=import-outside-toplevel
        from genjax.train import checkpoint as ckpt_lib
        from genjax.train import modes
        config = self.config.copy_and_resolve_references()
        config.flow_matching.reflow_from = ""
        try:
            run, step, params = modes.restore_for_inference(config, workdir, type(self))
        except ckpt_lib.CheckpointError as e:
            raise ConfigError(f"flow_matching.reflow_from={workdir!r}: {e}") from None
        run.checkpointer.close()
        self.teacher_step = step
        return jax.device_get(params)

    def init_params(self, rng, example_batch):
        """A reflow run starts from its teacher's weights."""
        if self.teacher is not None:
            return jax.tree.map(jnp.asarray, self.teacher)
        return super().init_params(rng, example_batch)

    def reflow_pairs(self, labels, rng, shape):
        """``(noise, image)`` pairs of the teacher's ODE for ``labels`` (the
        null label, unguided, where dropped), without gradients."""
        z = jax.random.normal(rng, shape)
        name, steps = self.reflow
        x0_fn = self.x0_fn(self.teacher, labels)
        image, _ = samplers_lib.SAMPLERS[name](x0_fn, self.path, z, num_steps=steps)
        return z, jax.lax.stop_gradient(image)

    def model_sigma_tilde(self, t_model):
        return self.path.sigma_tilde(1.0 - t_model / 999.0)  # t = 1 - tau

    def velocity_fn(self, params, labels=None, guidance_scale: float = 0.0, rng=None):
        """``v(x, tau)`` in flow matching's own time (noise at 0, data at 1)."""
        return super().network(params, labels, guidance_scale, rng)

    def network(self, params, labels=None, guidance_scale: float = 0.0, rng=None):
        """On the samplers' path: ``dx/dt = -v(x, 1 - t)``."""
        v = self.velocity_fn(params, labels, guidance_scale, rng)
        return lambda x, t: -v(x, 1.0 - t)

    def per_example_loss(self, params, x0, labels, rng, dropout_rng=None):
        v = self.velocity_fn(params, labels, rng=dropout_rng)
        return fm.flow_matching_loss(v, x0, rng) / self.num_dims

    def loss_fn(self, params, batch, rng):
        """Flow matching on the data, or (reflow) on the teacher's pairs."""
        if self.teacher is None:
            return super().loss_fn(params, batch, rng)
        label_rng, drop_rng, pair_rng, loss_rng = jax.random.split(rng, 4)
        labels = self._train_labels(batch, label_rng)
        shape = batch[self.field].shape
        noise, image = self.reflow_pairs(labels, pair_rng, shape)
        v = self.velocity_fn(params, labels, rng=drop_rng)
        loss = fm.flow_matching_loss(v, image, loss_rng, noise=noise) / self.num_dims
        return jnp.mean(loss), {}

    def ode_velocity(self, params):
        return self.network(params, self.null_labels(1))

    def ode_ends(self):
        return 0.0, 1.0

    def prior_log_prob(self, z):
        return standard_normal_log_prob(z)

    def run_sampler(self, name, params, labels, x_T, rng, steps, keep_path=False):
        if name == "euler":  # DDIM on the linear path, uniform in t, is Euler's method.
            name = "ddim"
        return self.path_sampler(name, params, labels, x_T, rng, steps, keep_path)
