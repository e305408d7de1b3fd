"""Score SDEs in continuous time (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations"), as pure functions.

A forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, 1]`` turns data
into noise; its perturbation kernel is Gaussian,

    x_t = mean(t) * x_0 + std(t) * z,    z ~ N(0, I),

so a network ``s(x, t)`` trained by denoising score matching on ``x_t``
estimates the score ``grad_x log p_t(x)`` at every noise level. Three SDEs:

- ``ve`` (variance exploding, NCSN's noise levels in continuous time):
  ``f = 0``, ``std(t) = sigma_min (sigma_max / sigma_min)^t``,
  ``g(t) = std(t) sqrt(2 ln(sigma_max / sigma_min))``; prior
  ``N(0, sigma_max^2 I)``.
- ``vp`` (variance preserving, DDPM's continuous limit): ``beta(t) =
  beta_min + t (beta_max - beta_min)``, ``f = -beta(t) x / 2``, ``g =
  sqrt(beta(t))``, ``mean(t) = exp(-int_0^t beta / 2)``, ``std(t)^2 = 1 -
  mean(t)^2``; prior ``N(0, I)``.
- ``subvp``: the drift of ``vp`` with ``g(t)^2 = beta(t) (1 -
  exp(-2 int_0^t beta))``, whose ``std(t) = 1 - mean(t)^2`` is below
  ``vp``'s at every ``t`` (Song et al., eq. 29).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from genjax.objectives import diffusion

KINDS = ("ve", "vp", "subvp")


@dataclasses.dataclass(frozen=True)
class SDE:
    """One of the three SDEs with its constants (Song et al.'s defaults)."""

    kind: str = "vp"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown SDE {self.kind!r}; valid: {', '.join(KINDS)}")
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, "
                             f"{self.sigma_max}")
        if not 0.0 < self.beta_min < self.beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {self.beta_min}, "
                             f"{self.beta_max}")

    # ------------------------------------------------------------------
    # Coefficients, elementwise in ``t`` (any shape).

    def _log_mean(self, t):
        """``-int_0^t beta(s) ds / 2`` (``vp`` and ``subvp``)."""
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, t):
        """``(mean(t), std(t))`` of the perturbation kernel ``p(x_t | x_0)``."""
        if self.kind == "ve":
            std = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
            return jnp.ones_like(std), std
        log_mean = self._log_mean(t)
        mean = jnp.exp(log_mean)
        if self.kind == "vp":
            return mean, jnp.sqrt(-jnp.expm1(2.0 * log_mean))
        return mean, -jnp.expm1(2.0 * log_mean)

    def drift_coefficient(self, t):
        """``a(t)`` with ``f(x, t) = a(t) x`` (every SDE here is linear in x)."""
        if self.kind == "ve":
            return jnp.zeros_like(t)
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        """``g(t)``."""
        if self.kind == "ve":
            _, std = self.marginal(t)
            return std * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))
        beta = self.beta(t)
        if self.kind == "vp":
            return jnp.sqrt(beta)
        return jnp.sqrt(beta * -jnp.expm1(4.0 * self._log_mean(t)))

    # ------------------------------------------------------------------
    # The prior at t = 1.

    def prior_std(self) -> float:
        return self.sigma_max if self.kind == "ve" else 1.0

    def prior_sample(self, rng, shape):
        return self.prior_std() * jax.random.normal(rng, shape)

    def prior_log_prob(self, z):
        """``log N(z; 0, prior_std^2 I)`` per example, ``[B, ...] -> [B]``."""
        s = self.prior_std()
        flat = z.reshape(z.shape[0], -1)
        d = flat.shape[1]
        return (-0.5 * jnp.sum(flat * flat, axis=1) / (s * s)
                - d * (math.log(s) + 0.5 * math.log(2.0 * math.pi)))


def per_example(t, x):
    """``t [B]`` -> ``[B, 1, ...]`` to broadcast against ``x [B, ...]``."""
    return t.reshape((-1,) + (1,) * (x.ndim - 1))


def perturb(sde: SDE, x0, t, noise):
    """``x_t = mean(t) x_0 + std(t) z`` for per-example times ``t [B]``."""
    mean, std = sde.marginal(t)
    return per_example(mean, x0) * x0 + per_example(std, x0) * noise


def dsm_loss(score_fn, sde: SDE, x0, rng, *, eps: float = 1e-5,
             likelihood_weighting: bool = False, min_snr_gamma: float = 0.0):
    """Denoising score matching over a continuum of noise levels, per example.

    ``t ~ U[eps, 1]``, ``x_t = mean x_0 + std z``; the score of the kernel is
    ``-z / std``. With the weighting ``lambda(t) = std(t)^2`` (Song et al.,
    eq. 7, the default) the loss is ``||std s(x_t, t) + z||^2``, of the same
    scale at every t; ``likelihood_weighting`` uses ``lambda = g(t)^2``
    (Song et al. 2021b), which bounds the negative log-likelihood.
    ``min_snr_gamma`` > 0 multiplies the ``std^2`` weighting by Min-SNR's
    ``min(SNR, gamma) / SNR`` with ``SNR = mean^2 / std^2`` (Hang et al.
    2023; the weight on the implied x0 error is ``min(SNR, gamma)``).
    ``score_fn(x, t)`` takes ``t [B]``. Returns ``[B]`` (summed over
    dimensions).
    """
    t_rng, z_rng = jax.random.split(rng)
    b = x0.shape[0]
    t = jax.random.uniform(t_rng, (b,), minval=eps, maxval=1.0)
    z = jax.random.normal(z_rng, x0.shape, x0.dtype)
    xt = perturb(sde, x0, t, z)
    _, std = sde.marginal(t)
    score = score_fn(xt, t)
    std_b = per_example(std, x0)
    if likelihood_weighting:
        g2 = per_example(sde.diffusion(t) ** 2, x0)
        residual = (score + z / std_b) ** 2 * g2
    else:
        residual = (std_b * score + z) ** 2
    loss = residual.reshape(b, -1).sum(axis=1)
    if min_snr_gamma > 0 and not likelihood_weighting:
        mean, _ = sde.marginal(t)
        # The std^2-weighted DSM loss is the noise prediction's (eps) loss.
        loss = loss * diffusion.min_snr_weight((mean / std) ** 2, min_snr_gamma, "eps")
    return loss


# ---------------------------------------------------------------------------
# Fixed-step samplers, each one ``lax.scan`` from t = 1 down to t = eps.


def _times(num_steps: int, eps: float):
    """``num_steps + 1`` times from 1 down to ``eps``."""
    return jnp.linspace(1.0, eps, num_steps + 1)


def reverse_sde_sample(score_fn, sde: SDE, rng, shape, num_steps: int,
                       eps: float = 1e-3):
    """Euler-Maruyama on the reverse SDE ``dx = [f - g^2 s(x, t)] dt + g dw``
    (Song et al., eq. 6), from the prior at t = 1 to t = eps; the last step
    adds no noise. Returns ``(x, nfe)`` with ``nfe = num_steps`` score
    evaluations."""
    prior_rng, rng = jax.random.split(rng)
    x = sde.prior_sample(prior_rng, shape)
    times = _times(num_steps, eps)
    keys = jax.random.split(rng, num_steps)
    b = shape[0]

    def step(x, inputs):
        i, key = inputs
        t, t_next = times[i], times[i + 1]
        dt = t - t_next
        tb = jnp.full((b,), t)
        g = sde.diffusion(t)
        drift = sde.drift_coefficient(t) * x - g * g * score_fn(x, tb)
        mean = x - drift * dt
        noise = jax.random.normal(key, x.shape, x.dtype)
        last = i == num_steps - 1
        return jnp.where(last, mean, mean + g * jnp.sqrt(dt) * noise), None

    x, _ = jax.lax.scan(step, x, (jnp.arange(num_steps), keys))
    return x, num_steps


def probability_flow_drift(score_fn, sde: SDE, x, t):
    """The probability-flow ODE's velocity ``dx/dt = f - g^2 s(x, t) / 2``
    (Song et al., eq. 13); ``t`` per example ``[B]``."""
    g = per_example(sde.diffusion(t), x)
    a = per_example(sde.drift_coefficient(t), x)
    return a * x - 0.5 * g * g * score_fn(x, t)


def probability_flow_sample(score_fn, sde: SDE, rng, shape, num_steps: int,
                            eps: float = 1e-3):
    """Euler steps of the probability-flow ODE from the prior at t = 1 to
    t = eps: deterministic given the prior draw. Returns ``(x, nfe)``."""
    x = sde.prior_sample(rng, shape)
    times = _times(num_steps, eps)
    b = shape[0]

    def step(x, i):
        t, t_next = times[i], times[i + 1]
        v = probability_flow_drift(score_fn, sde, x, jnp.full((b,), t))
        return x - v * (t - t_next), None

    x, _ = jax.lax.scan(step, x, jnp.arange(num_steps))
    return x, num_steps


# ---------------------------------------------------------------------------
# Likelihood through the probability-flow ODE.


def divergence(fn, x, rng=None, num_probes: int = 1):
    """``div fn`` at ``x [B, ...]`` per example (``fn`` maps ``[B, ...]`` to
    the same shape, each example independently).

    With ``rng``: Hutchinson's estimate ``mean_k e_k^T (d fn / dx) e_k`` with
    Rademacher probes ``e_k``, one Jacobian-vector product each (Grathwohl et
    al. 2019, FFJORD). Without: the exact trace, one JVP per dimension
    (for small ``D`` and for tests)."""
    b = x.shape[0]
    if rng is None:
        d = int(math.prod(x.shape[1:]))
        basis = jnp.eye(d, dtype=x.dtype).reshape((d,) + x.shape[1:])

        def one(e):
            e = jnp.broadcast_to(e, x.shape)
            _, jvp = jax.jvp(fn, (x,), (e,))
            return (jvp * e).reshape(b, -1).sum(axis=1)

        return jnp.sum(jax.lax.map(one, basis), axis=0)
    probes = jax.random.rademacher(rng, (num_probes,) + x.shape, x.dtype)

    def probe(e):
        _, jvp = jax.jvp(fn, (x,), (e,))
        return (jvp * e).reshape(b, -1).sum(axis=1)

    return jnp.mean(jax.lax.map(probe, probes), axis=0)


def ode_log_likelihood(score_fn, sde: SDE, x, rng=None, *, num_steps: int = 100,
                       num_probes: int = 1, eps: float = 1e-5):
    """``log p_eps(x)`` per example by the instantaneous change of variables
    along the probability-flow ODE (Song et al. 2021, appendix D.2), from
    ``t = eps`` to 1 (``velocity_log_likelihood``). Returns ``(log_p [B],
    nfe)``; densities of continuous ``x`` (for 8-bit images, dequantise
    first and add ``D ln 256``, see ``likelihood``)."""
    return velocity_log_likelihood(
        lambda z, t: probability_flow_drift(score_fn, sde, z, t),
        sde.prior_log_prob, x, eps, 1.0, rng, num_steps=num_steps,
        num_probes=num_probes)


def velocity_log_likelihood(velocity_fn, prior_log_prob, x, t_data: float,
                            t_noise: float, rng=None, *, num_steps: int = 100,
                            num_probes: int = 1):
    """``log p(x)`` per example under the ODE ``dx/dt = velocity_fn(x, t)``
    that carries data at ``t_data`` to the prior at ``t_noise`` (either
    direction): ``log p(x) = log prior(x(t_noise)) + int_{t_data}^{t_noise}
    div v dt``, by ``num_steps`` fixed RK4 steps in one ``lax.scan`` (jitted
    end to end). ``rng`` draws Hutchinson probes for the divergence
    (``num_probes`` per evaluation, fresh at every evaluation); None takes
    the exact trace. Returns ``(log_p [B], nfe)``, ``nfe = 4 num_steps``."""
    b = x.shape[0]
    times = jnp.linspace(t_data, t_noise, num_steps + 1)
    keys = (jax.random.split(rng, num_steps * 4).reshape(num_steps, 4)
            if rng is not None else jnp.zeros((num_steps, 4)))

    def field(y, t, key):
        tb = jnp.full((b,), t)
        v_fn = lambda z: velocity_fn(z, tb)  # noqa: E731
        div = divergence(v_fn, y, key if rng is not None else None, num_probes)
        return v_fn(y), div

    def step(carry, inputs):
        y, total = carry
        i, ks = inputs
        t, h = times[i], times[i + 1] - times[i]
        k1, d1 = field(y, t, ks[0])
        k2, d2 = field(y + 0.5 * h * k1, t + 0.5 * h, ks[1])
        k3, d3 = field(y + 0.5 * h * k2, t + 0.5 * h, ks[2])
        k4, d4 = field(y + h * k3, t + h, ks[3])
        y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        total = total + h / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4)
        return (y, total), None

    (end, div_integral), _ = jax.lax.scan(
        step, (x, jnp.zeros((b,), x.dtype)), (jnp.arange(num_steps), keys))
    return prior_log_prob(end) + div_integral, 4 * num_steps


def predictor_corrector_sample(score_fn, sde: SDE, rng, shape, num_steps: int, *,
                               snr: float = 0.16, corrector_steps: int = 1,
                               eps: float = 1e-3):
    """Predictor-corrector sampling (Song et al. 2021, algorithms 2 and 3):
    each step is ``corrector_steps`` Langevin moves at the current time, with
    the step size set by the signal-to-noise ratio ``snr``
    (``2 alpha (snr ||z|| / ||s||)^2``, per example, so that a sample never
    depends on its batch; the norms concentrate for images, while for a few
    dimensions they are noisy), then one reverse-SDE
    Euler-Maruyama step; the last step adds no noise. Returns ``(x, nfe)``,
    ``nfe = num_steps * (1 + corrector_steps)``."""
    prior_rng, rng = jax.random.split(rng)
    x = sde.prior_sample(prior_rng, shape)
    times = _times(num_steps, eps)
    keys = jax.random.split(rng, num_steps * (corrector_steps + 1)).reshape(
        num_steps, corrector_steps + 1)
    b = shape[0]

    def norm(v):
        return jnp.sqrt(jnp.sum(v.reshape(b, -1) ** 2, axis=1))

    def step(x, inputs):
        i, ks = inputs
        t, t_next = times[i], times[i + 1]
        tb = jnp.full((b,), t)
        # Langevin's alpha: 1 - beta(t) dt for the VP family, 1 for VE.
        mean, _ = sde.marginal(t)
        mean_next, _ = sde.marginal(t_next)
        alpha = (mean_next / mean) ** 2 if sde.kind != "ve" else 1.0
        for j in range(corrector_steps):
            grad = score_fn(x, tb)
            z = jax.random.normal(ks[j], x.shape, x.dtype)
            step_size = 2.0 * alpha * (snr * norm(z) / jnp.maximum(norm(grad), 1e-12)) ** 2
            step_size = per_example(step_size, x)
            x = x + step_size * grad + jnp.sqrt(2.0 * step_size) * z
        dt = t - t_next
        g = sde.diffusion(t)
        drift = sde.drift_coefficient(t) * x - g * g * score_fn(x, tb)
        mean_x = x - drift * dt
        noise = jax.random.normal(ks[-1], x.shape, x.dtype)
        last = i == num_steps - 1
        return jnp.where(last, mean_x, mean_x + g * jnp.sqrt(dt) * noise), None

    x, _ = jax.lax.scan(step, x, (jnp.arange(num_steps), keys))
    return x, num_steps * (1 + corrector_steps)


def annealed_langevin_sample(score_fn, sigmas, rng, shape, *, steps_per_level: int = 100,
                             step_lr: float = 2e-5, init_scale: float = 1.0, init=None):
    """NCSN's annealed Langevin dynamics (Song & Ermon 2019, algorithm 1):
    for each noise level ``sigma_i`` (decreasing), ``steps_per_level`` moves
    ``x += a_i s(x, sigma_i) + sqrt(2 a_i) z`` with ``a_i = step_lr
    sigma_i^2 / sigma_L^2``. ``score_fn(x, sigma [B])``; starts from
    ``init`` or ``U[-init_scale, init_scale]``. Returns ``(x, nfe)``."""
    sigmas = jnp.asarray(sigmas)
    init_rng, rng = jax.random.split(rng)
    x = (jax.random.uniform(init_rng, shape, minval=-init_scale, maxval=init_scale)
         if init is None else init)
    num_levels = sigmas.shape[0]
    keys = jax.random.split(rng, num_levels * steps_per_level).reshape(
        num_levels, steps_per_level)
    b = shape[0]

    def level(x, inputs):
        sigma, ks = inputs
        a = step_lr * (sigma / sigmas[-1]) ** 2
        sb = jnp.full((b,), sigma)

        def move(x, key):
            z = jax.random.normal(key, x.shape, x.dtype)
            return x + a * score_fn(x, sb) + jnp.sqrt(2.0 * a) * z, None

        x, _ = jax.lax.scan(move, x, ks)
        return x, None

    x, _ = jax.lax.scan(level, x, (sigmas, keys))
    return x, num_levels * steps_per_level


def sliced_score_matching_loss(score_fn, x, rng, *, num_projections: int = 1):
    """Sliced score matching (Song et al. 2019), the variance-reduced form:
    ``v^T (d s / dx) v + ||s(x)||^2 / 2`` per example with Gaussian
    projections ``v``, one Jacobian-vector product each: no noise is added
    to the data, so it fits the data's own score (``score_fn(x)``)."""
    b = x.shape[0]
    vs = jax.random.normal(rng, (num_projections,) + x.shape, x.dtype)
    score = score_fn(x)

    def one(v):
        _, jv = jax.jvp(score_fn, (x,), (v,))
        return jnp.sum((v * jv).reshape(b, -1), axis=1)

    trace_term = jnp.mean(jax.lax.map(one, vs), axis=0)
    return trace_term + 0.5 * jnp.sum(score.reshape(b, -1) ** 2, axis=1)


# ---------------------------------------------------------------------------
# Adaptive solvers (diffrax): Tsit5 with a PID step-size controller, one
# solve per example (vmapped), so that an example's result and its number of
# function evaluations never depend on the rest of its batch or on the
# device count.

# Tsit5 has 7 stages, the last one reused as the next step's first (FSAL):
# 6 evaluations per step, accepted or rejected, and 1 to start.
TSIT5_EVALS_PER_STEP = 6


def _solve_one(field, y0, t0: float, t1: float, rtol: float, atol: float,
               max_steps: int):
    """``y(t1)`` of ``dy/dt = field(t, y)`` from ``y(t0) = y0`` (one example)
    by diffrax's Tsit5, and its number of function evaluations."""
    import diffrax  # pylint: disable=import-outside-toplevel

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: field(t, y)), diffrax.Tsit5(),
        t0=t0, t1=t1, dt0=(t1 - t0) / 64.0, y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps)
    end = jax.tree.map(lambda leaf: leaf[-1], solution.ys)
    nfe = TSIT5_EVALS_PER_STEP * solution.stats["num_steps"] + 1
    return end, nfe


def adaptive_ode_sample(velocity_fn, x0, t0: float, t1: float, *, rtol: float = 1e-5,
                        atol: float = 1e-5, max_steps: int = 4096, per_example=None):
    """``x(t1)`` of ``dx/dt = velocity_fn(x, t [B])`` from ``x(t0) = x0``,
    each example solved adaptively on its own. ``per_example`` (a pytree
    with the batch axis first, e.g. labels) is split with the examples and
    passed as ``velocity_fn(x, t, its rows)``. Returns ``(x, nfe [B])``."""

    def one(x, extra):
        def field(t, y):
            if per_example is None:
                return velocity_fn(y[None], jnp.full((1,), t))[0]
            rows = jax.tree.map(lambda a: a[None], extra)
            return velocity_fn(y[None], jnp.full((1,), t), rows)[0]
        return _solve_one(field, x, t0, t1, rtol, atol, max_steps)

    return jax.vmap(one)(x0, per_example)


def adaptive_velocity_log_likelihood(velocity_fn, prior_log_prob, x, t_data: float,
                                     t_noise: float, rng=None, *, num_probes: int = 1,
                                     rtol: float = 1e-5, atol: float = 1e-5,
                                     max_steps: int = 4096):
    """``velocity_log_likelihood`` with an adaptive solver: the divergence by
    the exact trace (``rng`` None) or Hutchinson's estimate with
    ``num_probes`` Rademacher probes per example, fixed along the solve (an
    adaptive solver needs one smooth field). Returns ``(log_p [B], nfe
    [B])``."""
    b = x.shape[0]
    if rng is None:
        probes = jnp.zeros((b, 0) + x.shape[1:], x.dtype)
    else:
        probes = jax.random.rademacher(rng, (b, num_probes) + x.shape[1:], x.dtype)

    def one(xi, pi):
        def field(t, y):
            z, _ = y
            v_fn = lambda u: velocity_fn(u[None], jnp.full((1,), t))[0]  # noqa: E731
            if rng is None:
                div = divergence(lambda u: velocity_fn(u, jnp.full((1,), t)), z[None])[0]
            else:
                def probe(e):
                    _, jv = jax.jvp(v_fn, (z,), (e,))
                    return jnp.sum(jv * e)
                div = jnp.mean(jax.vmap(probe)(pi))
            return v_fn(z), div

        (end, integral), nfe = _solve_one(field, (xi, jnp.zeros((), x.dtype)),
                                          t_data, t_noise, rtol, atol, max_steps)
        return prior_log_prob(end[None])[0] + integral, nfe

    return jax.vmap(one)(x, probes)
