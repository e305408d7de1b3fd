"""Denoising diffusion: the forward process, the objective, samplers, the bound.

Notation of Ho et al. 2020 with 0-based step indices: index ``i`` in
``0 .. T-1`` is their ``t = i + 1``. Data ``x_0`` live in [-1, 1].

* Forward process (Ho et al. 2020, eq. 2 and 4):
  ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)`` and, in closed
  form, ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with
  ``abar_t = prod_{s <= t} (1 - beta_s)``.
* Schedules: ``linear`` betas (Ho et al. 2020, section 4: 1e-4 to 0.02) and
  ``cosine`` (Nichol & Dhariwal 2021, eq. 17, s = 0.008, betas clipped at
  0.999).
* Objective: the simplified loss ``E || eps - eps_theta(x_t, t) ||^2``
  (Ho et al. 2020, eq. 14), or the same regression on ``x_0`` or on
  ``v = sqrt(abar) eps - sqrt(1 - abar) x_0`` (Salimans & Ho 2022), averaged
  over pixels.
* Reverse process: ``p(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I)`` with the
  posterior mean of ``q(x_{t-1} | x_t, x_0)`` at the predicted ``x_0``
  (eq. 6-7) and ``sigma_t^2 = beta~_t`` (``small``) or ``beta_t``
  (``large``), the two choices of section 3.2.
* Samplers: ancestral DDPM sampling (Algorithm 2) and DDIM (Song et al. 2021,
  eq. 12) on any subsequence of steps with any ``eta``; each is one
  ``lax.scan`` over the steps, so a jitted sampler is one compiled loop.
* Likelihood: the variational bound of eq. 5, ``L_T + sum L_{t-1} + L_0``,
  with the discretised Gaussian decoder of section 3.3 for ``L_0``; in nats
  per example and bits per dimension.
* Editing: inpainting by replacement with RePaint's resampling (Lugmayr et
  al. 2022): at each step the known pixels come from ``q(x_{t-1} | x_0)``.

A ``denoise_fn(x_t, t) -> output`` is the network with its parameters (and
labels, guidance) bound: ``x_t`` is ``[B, ...]``, ``t`` is ``[B]`` int32
step indices, and the output has ``x_t``'s shape in the space that
``prediction`` names.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genjax.objectives import likelihood, samplers

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("small", "large")

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


# ---------------------------------------------------------------------------
# Schedules.


def linear_betas(num_steps: int, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020's betas, linear from ``beta_start`` to ``beta_end``
    (float64 ``[T]``)."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008,
                 max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: ``abar(t) = f(t) / f(0)`` with
    ``f(t) = cos((t/T + s) / (1 + s) * pi/2)^2``; ``beta_t = 1 - abar_t /
    abar_{t-1}``, clipped at ``max_beta`` (float64 ``[T]``)."""
    t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((t + s) / (1.0 + s) * math.pi / 2.0) ** 2
    abar = f / f[0]
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


class Schedule(NamedTuple):
    """The per-step constants of one noise schedule (float32 ``[T]`` each).

    Index ``i`` is Ho et al.'s ``t = i + 1``; ``alphas_cumprod_prev[0] = 1``
    (``abar_0``, no noise).
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    # q(x_{t-1} | x_t, x_0) (eq. 6-7): variance, its log (clipped at the
    # first step, where the variance is 0), and the two mean coefficients.
    posterior_variance: jax.Array
    posterior_log_variance: jax.Array
    posterior_mean_x0: jax.Array
    posterior_mean_xt: jax.Array

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    def reverse_log_variance(self, variance: str) -> jax.Array:
        """``log sigma_t^2`` of the reverse process: ``small`` is beta~_t,
        ``large`` is beta_t (with beta~ at the first step, where beta~ = 0
        would make the decoder degenerate; Nichol & Dhariwal 2021)."""
        if variance == "small":
            return self.posterior_log_variance
        if variance == "large":
            return jnp.log(jnp.concatenate(
                [self.posterior_variance[1:2], self.betas[1:]]))
        raise ValueError(f"variance={variance!r}; valid: {', '.join(VARIANCES)}")


def vp_betas(num_steps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> np.ndarray:
    """The VP SDE's ``abar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 /
    2)`` at ``t = k / T``, as ``T`` betas (float64 ``[T]``): few large steps
    for the denoising diffusion GAN (Xiao et al. 2022 use T = 4)."""
    t = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    abar = np.exp(-beta_min * t - 0.5 * (beta_max - beta_min) * t * t)
    return 1.0 - abar[1:] / abar[:-1]


def make_schedule(name: str, num_steps: int, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> Schedule:
    """The constants of schedule ``name`` (``linear``, ``cosine`` or ``vp``:
    ``vp_betas`` with ``beta_start``/``beta_end`` as its ``beta_min``/
    ``beta_max``) with ``num_steps`` steps, computed in float64 and stored as
    float32."""
    if num_steps < 1 or (num_steps < 2 and name != "vp"):
        raise ValueError(f"num_steps={num_steps} must be at least 2")
    if name == "linear":
        betas = linear_betas(num_steps, beta_start, beta_end)
    elif name == "cosine":
        betas = cosine_betas(num_steps)
    elif name == "vp":
        betas = vp_betas(num_steps, beta_start, beta_end)
    else:
        raise ValueError(f"schedule={name!r}; valid: {', '.join(SCHEDULES)}")
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    post_logvar = np.log(np.concatenate([post_var[1:2], post_var[1:]]))
    coef_x0 = betas * np.sqrt(abar_prev) / (1.0 - abar)
    coef_xt = (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return Schedule(f32(betas), f32(abar), f32(abar_prev), f32(post_var),
                    f32(post_logvar), f32(coef_x0), f32(coef_xt))


def _per_example(values: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
    """``values[t]`` shaped ``[B, 1, ..., 1]`` to broadcast against ``like``."""
    return values[t].reshape((t.shape[0],) + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------------------
# The forward process and the parametrisations.


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array,
             noise: jax.Array) -> jax.Array:
    """A draw of ``q(x_t | x_0)`` (Ho et al. 2020, eq. 4) from ``noise``."""
    abar = _per_example(sched.alphas_cumprod, t, x0)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def q_posterior(sched: Schedule, x0: jax.Array, xt: jax.Array, t: jax.Array):
    """Mean and log-variance of ``q(x_{t-1} | x_t, x_0)`` (eq. 6-7)."""
    mean = (_per_example(sched.posterior_mean_x0, t, x0) * x0
            + _per_example(sched.posterior_mean_xt, t, x0) * xt)
    return mean, _per_example(sched.posterior_log_variance, t, x0)


def target(prediction: str, x0: jax.Array, noise: jax.Array,
           sched: Schedule, t: jax.Array) -> jax.Array:
    """What the network regresses: ``eps``, ``x0`` or ``v`` (Salimans & Ho
    2022: ``v = sqrt(abar) eps - sqrt(1 - abar) x_0``)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        abar = _per_example(sched.alphas_cumprod, t, x0)
        return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0
    raise ValueError(f"prediction={prediction!r}; valid: {', '.join(PREDICTIONS)}")


def eps_and_x0(prediction: str, output: jax.Array, xt: jax.Array,
               sched: Schedule, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(eps_hat, x0_hat)`` from a network ``output`` in ``prediction``'s
    space, using ``x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps``."""
    abar = _per_example(sched.alphas_cumprod, t, xt)
    a, s = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
    if prediction == "eps":
        return output, (xt - s * output) / a
    if prediction == "x0":
        return (xt - a * output) / s, output
    if prediction == "v":
        return s * xt + a * output, a * xt - s * output
    raise ValueError(f"prediction={prediction!r}; valid: {', '.join(PREDICTIONS)}")


def _pixel_mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _pixel_sum(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


WEIGHTINGS = ("none", "min_snr")


def loss_weight(weighting: str, prediction: str, sched: Schedule, t: jax.Array,
                gamma: float = 5.0) -> jax.Array:
    """Per-example weights ``[B]`` of the simplified loss: ``none`` (1), or
    Min-SNR-gamma (Hang et al. 2023), which weights each step's loss *on
    x_0* by ``min(SNR, gamma)``; on the regressed target this is
    ``min(SNR, gamma) / SNR`` for ``eps``, ``min(SNR, gamma)`` for ``x0``
    and ``min(SNR, gamma) / (SNR + 1)`` for ``v``, with ``SNR = abar / (1 -
    abar)``."""
    if weighting == "none":
        return jnp.ones(t.shape, jnp.float32)
    if weighting != "min_snr":
        raise ValueError(f"weighting={weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    abar = sched.alphas_cumprod[t]
    return min_snr_weight(abar / (1.0 - abar), gamma, prediction)


def min_snr_weight(snr: jax.Array, gamma: float, prediction: str = "eps") -> jax.Array:
    """Min-SNR-gamma's weight on the loss of ``prediction`` at signal-to-noise
    ratios ``snr`` (any path: ``alpha^2 / sigma^2``); see ``loss_weight``."""
    clipped = jnp.minimum(snr, gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1.0)}[prediction]


def denoising_loss(denoise_fn: DenoiseFn, sched: Schedule, x0: jax.Array,
                   rng: jax.Array, prediction: str = "eps", *,
                   weighting: str = "none", min_snr_gamma: float = 5.0):
    """The simplified objective (Ho et al. 2020, eq. 14) per example ``[B]``:
    ``t`` uniform over the steps, ``x_t`` from ``q(x_t | x_0)``, and the
    squared error of the network's ``prediction`` averaged over pixels,
    times ``loss_weight(weighting, ...)``.

    Returns ``(loss [B], t [B])``.
    """
    t_rng, noise_rng = jax.random.split(rng)
    t = jax.random.randint(t_rng, (x0.shape[0],), 0, sched.num_steps)
    noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
    xt = q_sample(sched, x0, t, noise)
    err = denoise_fn(xt, t) - target(prediction, x0, noise, sched, t)
    weight = loss_weight(weighting, prediction, sched, t, min_snr_gamma)
    return weight * _pixel_mean(jnp.square(err)), t


# ---------------------------------------------------------------------------
# The reverse process and the samplers.


def p_mean(denoise_fn: DenoiseFn, sched: Schedule, xt: jax.Array, t: jax.Array,
           prediction: str, clip: bool = True):
    """``(mean of p(x_{t-1} | x_t), x0_hat)``: the posterior mean at the
    predicted ``x_0``, which is clipped to [-1, 1] if ``clip``."""
    _, x0_hat = eps_and_x0(prediction, denoise_fn(xt, t), xt, sched, t)
    if clip:
        x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    mean, _ = q_posterior(sched, x0_hat, xt, t)
    return mean, x0_hat


def ddpm_sample(denoise_fn: DenoiseFn, sched: Schedule, shape: tuple[int, ...],
                rng: jax.Array, *, prediction: str = "eps",
                variance: str = "small", clip: bool = True,
                x_T: jax.Array | None = None, keep_path: bool = False):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2) through all ``T``
    steps, in one ``lax.scan``; returns ``x_0`` of ``shape`` in [-1, 1].

    ``x_T`` (default: drawn from ``rng``) is the starting noise. Step ``i``
    draws its noise from ``fold_in(rng, i)``; no noise is added at the last.
    ``keep_path`` also returns every intermediate ``x_{t-1}``, ``[T, *shape]``
    (first step first), for pictures of the reverse process.
    """
    log_var = sched.reverse_log_variance(variance)
    if x_T is None:
        x_T = jax.random.normal(jax.random.fold_in(rng, sched.num_steps), shape)

    def body(x, i):
        t = jnp.full((shape[0],), i, jnp.int32)
        mean, _ = p_mean(denoise_fn, sched, x, t, prediction, clip)
        z = jax.random.normal(jax.random.fold_in(rng, i), shape)
        sigma = jnp.where(i > 0, jnp.exp(0.5 * log_var[i]), 0.0)
        x = mean + sigma * z
        return x, (x if keep_path else None)

    x, path = jax.lax.scan(body, x_T, jnp.arange(sched.num_steps - 1, -1, -1))
    return (x, path) if keep_path else x


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """``num_steps`` step indices spread evenly over ``0 .. T-1``, increasing
    (Song et al. 2021, section 4.2), always including both ends."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(
            f"DDIM steps={num_steps} must be between 1 and the diffusion's "
            f"{num_train_steps} steps")
    if num_steps == 1:
        return np.array([num_train_steps - 1])
    steps = np.round(np.linspace(0, num_train_steps - 1, num_steps)).astype(np.int32)
    return np.unique(steps)


def ddim_sample(denoise_fn: DenoiseFn, sched: Schedule, shape: tuple[int, ...],
                rng: jax.Array, *, num_steps: int = 50, eta: float = 0.0,
                prediction: str = "eps", clip: bool = True,
                x_T: jax.Array | None = None, keep_path: bool = False):
    """DDIM sampling (Song et al. 2021, eq. 12) on ``num_steps`` of the steps
    (``ddim_timesteps``), in one ``lax.scan``: ``genjax.objectives.samplers.
    ddim`` on the schedule's path, the network fed integer step indices.
    ``eta = 0`` is deterministic given ``x_T``, ``eta = 1`` matches the
    ancestral sampler's variance (step ``i``'s noise from ``fold_in(rng,
    i)``, as ``ddpm_sample``'s). Returns ``x_0`` in [-1, 1] (and with
    ``keep_path`` every step's result, ``[num_steps, *shape]``).
    """
    steps = ddim_timesteps(sched.num_steps, num_steps)[::-1]  # decreasing
    path = samplers.DiscretePath(np.asarray(sched.alphas_cumprod))
    if x_T is None:
        x_T = jax.random.normal(jax.random.fold_in(rng, sched.num_steps), shape)
    out = samplers.ddim(discrete_x0_fn(denoise_fn, path, prediction, clip,
                                       integer_steps=True),
                        path, x_T, rng, eta=eta,
                        times=(steps.astype(np.float64) + 1.0) / sched.num_steps,
                        noise_ids=steps[:-1], keep_path=keep_path)
    return (out[0], out[1]) if keep_path else out[0]


def discrete_x0_fn(denoise_fn: DenoiseFn, path, prediction: str, clip: bool,
                   integer_steps: bool = False) -> samplers.X0Fn:
    """A discrete-time network as the data prediction ``x0_fn(x, t)`` of the
    samplers in ``genjax.objectives.samplers``: ``t`` in ``[1/T, 1]`` is
    fed as the step index ``t T - 1`` (fractional between the training
    steps, rounded if ``integer_steps``), the output read in
    ``prediction``'s space, ``x_0`` clipped to [-1, 1] if ``clip``."""
    def x0_fn(x, t):
        index = path.index(t)
        if integer_steps:
            index = jnp.round(index).astype(jnp.int32)
        alpha = path.alpha(t).reshape((-1,) + (1,) * (x.ndim - 1))
        sigma = path.sigma(t).reshape((-1,) + (1,) * (x.ndim - 1))
        x0 = samplers.x0_from_output(prediction, denoise_fn(x, index), x, alpha, sigma)
        return jnp.clip(x0, -1.0, 1.0) if clip else x0
    return x0_fn


def inpaint(denoise_fn: DenoiseFn, sched: Schedule, x0_known: jax.Array,
            mask: jax.Array, rng: jax.Array, *, resample: int = 1,
            prediction: str = "eps", variance: str = "small",
            clip: bool = True) -> jax.Array:
    """Fills the pixels where ``mask`` is 0 with an unconditional model.

    Replacement with resampling (RePaint, Lugmayr et al. 2022, Algorithm 1):
    at every step, the known pixels (``mask`` 1) of ``x_{t-1}`` are drawn
    from ``q(x_{t-1} | x_0)`` of the image, the unknown ones from the
    model's ``p(x_{t-1} | x_t)``; ``resample`` > 1 then diffuses the merged
    ``x_{t-1}`` back to ``x_t`` and repeats the step, ``resample`` times in
    all, so that the generated part agrees with the known part. ``mask``
    broadcasts against ``x0_known`` (e.g. ``[B, H, W, 1]``). Returns ``x_0``
    in [-1, 1], equal to ``x0_known`` where ``mask`` is 1.
    """
    if resample < 1:
        raise ValueError(f"resample={resample} must be at least 1")
    log_var = sched.reverse_log_variance(variance)
    shape = x0_known.shape
    mask = jnp.broadcast_to(mask, shape).astype(x0_known.dtype)
    x_T = jax.random.normal(jax.random.fold_in(rng, sched.num_steps), shape)

    def one_step(x, i, r):
        key = jax.random.fold_in(jax.random.fold_in(rng, i), r)
        k_known, k_model, k_back = jax.random.split(key, 3)
        t = jnp.full((shape[0],), i, jnp.int32)
        # Known pixels at level i-1 (x_0 itself at the last step).
        noisy = q_sample(sched, x0_known, jnp.maximum(t - 1, 0),
                         jax.random.normal(k_known, shape))
        known = jnp.where(i > 0, noisy, x0_known)
        mean, _ = p_mean(denoise_fn, sched, x, t, prediction, clip)
        sigma = jnp.where(i > 0, jnp.exp(0.5 * log_var[i]), 0.0)
        unknown = mean + sigma * jax.random.normal(k_model, shape)
        x_prev = mask * known + (1.0 - mask) * unknown
        # q(x_t | x_{t-1}) back up, for the next resampling round.
        beta = sched.betas[i]
        x_back = (jnp.sqrt(1.0 - beta) * x_prev
                  + jnp.sqrt(beta) * jax.random.normal(k_back, shape))
        return x_prev, x_back

    def body(x, i):
        def round_(r, x_t):
            _, x_back = one_step(x_t, i, r)
            return x_back
        # The first resample-1 rounds go down and back up; the last goes down.
        x = jax.lax.fori_loop(0, resample - 1, round_, x)
        x_prev, _ = one_step(x, i, resample - 1)
        return x_prev, None

    x, _ = jax.lax.scan(body, x_T, jnp.arange(sched.num_steps - 1, -1, -1))
    return x


# ---------------------------------------------------------------------------
# The variational bound (Ho et al. 2020, eq. 5).


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def prior_kl(sched: Schedule, x0: jax.Array) -> jax.Array:
    """``L_T = KL(q(x_T | x_0) || N(0, I))`` per example, in nats ``[B]``."""
    t = jnp.full((x0.shape[0],), sched.num_steps - 1, jnp.int32)
    abar = _per_example(sched.alphas_cumprod, t, x0)
    kl = normal_kl(jnp.sqrt(abar) * x0, jnp.log(1.0 - abar), 0.0, 0.0)
    return _pixel_sum(kl)


def variational_bound_estimate(denoise_fn: DenoiseFn, sched: Schedule, x0: jax.Array,
                               rng: jax.Array, *, num_terms: int,
                               prediction: str = "eps", variance: str = "small",
                               clip: bool = False) -> jax.Array:
    """An unbiased estimate of ``variational_bound``'s ``nll_bound`` per
    example (nats ``[B]``) at ``num_terms`` network passes instead of T: the
    KL steps ``1 .. T-1`` cut into ``num_terms`` contiguous strata, one step
    drawn uniformly from each (per example) and its term weighted by the
    stratum's size; the prior and decoder terms exact. With ``num_terms = T -
    1`` every stratum is one step and, the noise being drawn as
    ``variational_bound`` draws it, the estimate equals the full bound."""
    num_kl = sched.num_steps - 1
    if not 1 <= num_terms <= num_kl:
        raise ValueError(f"num_terms={num_terms}: between 1 and T - 1 = {num_kl}")
    edges = np.linspace(1, sched.num_steps, num_terms + 1).round().astype(np.int32)
    starts, sizes = jnp.asarray(edges[:-1]), jnp.asarray(np.diff(edges))
    num = x0.shape[0]
    t_rng = jax.random.fold_in(rng, 2 ** 31 - 1)

    def body(total, k):
        u = jax.random.uniform(jax.random.fold_in(t_rng, k), (num,))
        t = starts[k] + jnp.minimum((u * sizes[k]).astype(jnp.int32), sizes[k] - 1)
        noise_key = jax.random.fold_in(rng, k + 1)  # the full bound's key at size 1
        xt = q_sample(sched, x0, t, jax.random.normal(noise_key, x0.shape))
        term = _kl_term(denoise_fn, sched, x0, xt, t, prediction, variance, clip)
        return total + sizes[k].astype(term.dtype) * term, None

    diffusion, _ = jax.lax.scan(body, jnp.zeros((num,)), jnp.arange(num_terms))
    x1 = q_sample(sched, x0, jnp.zeros((num,), jnp.int32),
                  jax.random.normal(jax.random.fold_in(rng, 0), x0.shape))
    decoder_nll = _decoder_term(denoise_fn, sched, x0, x1, prediction, variance, clip)
    return prior_kl(sched, x0) + diffusion + decoder_nll


def _kl_term(denoise_fn, sched, x0, xt, t, prediction, variance, clip):
    """``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))``, ``[B]``."""
    true_mean, true_logvar = q_posterior(sched, x0, xt, t)
    model_mean, _ = p_mean(denoise_fn, sched, xt, t, prediction, clip)
    model_logvar = _per_example(sched.reverse_log_variance(variance), t, x0)
    return _pixel_sum(normal_kl(true_mean, true_logvar, model_mean, model_logvar))


def _decoder_term(denoise_fn, sched, x0, x1, prediction, variance, clip):
    """``L_0 = -log p(x_0 | x_1)`` with the discretised decoder, ``[B]``."""
    t = jnp.zeros((x0.shape[0],), jnp.int32)
    model_mean, _ = p_mean(denoise_fn, sched, x1, t, prediction, clip)
    log_scale = 0.5 * _per_example(sched.reverse_log_variance(variance), t, x0)
    return -_pixel_sum(likelihood.discretized_gaussian_log_likelihood(x0, model_mean,
                                                           log_scale))


def bound_term(denoise_fn: DenoiseFn, sched: Schedule, x0: jax.Array,
               t: jax.Array, noise: jax.Array, *, prediction: str = "eps",
               variance: str = "small", clip: bool = False) -> jax.Array:
    """One term of the bound per example, in nats ``[B]``: ``L_{t-1} =
    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for step indices
    ``t > 0``, and the decoder's ``L_0 = -log p(x_0 | x_1)`` at ``t = 0``,
    with ``x_t`` drawn from ``noise``."""
    xt = q_sample(sched, x0, t, noise)
    kl = _kl_term(denoise_fn, sched, x0, xt, t, prediction, variance, clip)
    decoder = _decoder_term(denoise_fn, sched, x0, xt, prediction, variance, clip)
    return jnp.where(t == 0, decoder, kl)


def variational_bound(denoise_fn: DenoiseFn, sched: Schedule, x0: jax.Array,
                      rng: jax.Array, *, prediction: str = "eps",
                      variance: str = "small", clip: bool = False) -> dict:
    """The full bound of eq. 5 per example, every step evaluated once: the
    ``T - 1`` KL terms in one ``lax.scan``, each with fresh noise
    (``fold_in(rng, i)`` for step index ``i``), then the decoder term.

    Returns ``{'nll_bound', 'prior', 'decoder_nll', 'diffusion'}``, each
    ``[B]`` in nats, with ``nll_bound = prior + diffusion + decoder_nll``.
    """
    num = x0.shape[0]

    def noisy(i):
        t = jnp.full((num,), i, jnp.int32)
        noise = jax.random.normal(jax.random.fold_in(rng, i), x0.shape)
        return q_sample(sched, x0, t, noise), t

    def body(total, i):
        xt, t = noisy(i)
        return total + _kl_term(denoise_fn, sched, x0, xt, t, prediction,
                                variance, clip), None

    diffusion, _ = jax.lax.scan(body, jnp.zeros((num,)),
                                jnp.arange(1, sched.num_steps))
    x1, _ = noisy(0)
    decoder_nll = _decoder_term(denoise_fn, sched, x0, x1, prediction,
                                variance, clip)
    prior = prior_kl(sched, x0)
    return {"nll_bound": prior + diffusion + decoder_nll, "prior": prior,
            "decoder_nll": decoder_nll, "diffusion": diffusion}
