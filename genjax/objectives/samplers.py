"""Samplers shared by every Gaussian-path model: DDPM's epsilon network, the
score SDEs and flow matching.

Each of these models corrupts data along a Gaussian path

    x_t = alpha(t) x_0 + sigma(t) z,    z ~ N(0, I),

from the data near ``t_min`` to (nearly) pure noise at ``t_max``, and each
network can be read as a *data prediction* ``x0_fn(x, t) ~ E[x_0 | x_t]``
(an epsilon, score, v or velocity output is an affine map of it at fixed
``x_t``). A sampler here sees only that function and the path, so every
sampler runs on every model:

- ``ddim``: DDIM (Song et al. 2021, eq. 12) on any path, any ``eta``; at
  ``eta = 0`` it is Euler's method on the probability-flow ODE in EDM's
  variables and DPM-Solver's first order.
- ``dpm2``/``dpm3``: DPM-Solver++ (Lu et al. 2022b), the multistep
  second- and third-order data-prediction solvers, steps uniform in
  log-SNR ``lambda = log(alpha / sigma)``, lower orders at the first steps
  (no history yet) and, below 15 steps, at the last ones.
- ``heun``: EDM's deterministic second-order sampler (Karras et al. 2022,
  algorithm 1) on ``x~ = x / alpha`` against ``sigma~ = sigma / alpha``,
  with their ``rho = 7`` spacing of the noise levels.
- ``adaptive``: the same ODE, ``dx~ / d log sigma~ = x~ - D(x~)``, solved
  per example by diffrax's Tsit5 with a PID controller.

Every sampler evaluates the network at ``num_steps`` noise levels from
``t_max`` down (``heun``: twice between levels; ``time_grid``), the last one
interval above ``t_min``, and its last move returns the data prediction
there, so ``N`` evaluations make ``N`` moves and it ends on a denoised
``x_0`` rather than on ``x_{t_min}``; each returns ``(x_0, nfe)``, ``nfe`` its number of network
evaluations (per example, ``[B]``, for ``adaptive``).

Paths: ``DiscretePath`` (a DDPM schedule: ``t = (i + 1) / T`` for step index
``i``, log alpha interpolated between steps as DPM-Solver does for discrete
models), ``SDEPath`` (VE, VP, sub-VP, from ``genjax.objectives.sde``) and
``LinearPath`` (flow matching's ``x_t = (1 - t) x_0 + t z``).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genjax.objectives import sde as sde_lib

X0Fn = Callable[[jax.Array, jax.Array], jax.Array]

GRIDS = ("uniform", "logsnr", "karras")


# ---------------------------------------------------------------------------
# Paths.


class Path:
    """``x_t = alpha(t) x_0 + sigma(t) z`` on ``[t_min, t_max]``.

    Subclasses give ``log_alpha``, ``sigma`` and ``t_of_lambda`` (the inverse
    of the log-SNR ``lambda(t) = log alpha - log sigma``, decreasing in t),
    elementwise on jnp arrays; ``prior_std`` is the scale of the noise a
    sampler starts from.
    """

    t_min: float
    t_max: float
    prior_std: float = 1.0

    def log_alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def t_of_lambda(self, lam):
        raise NotImplementedError

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def lam(self, t):
        return self.log_alpha(t) - jnp.log(self.sigma(t))

    def sigma_tilde(self, t):
        """EDM's noise level ``sigma / alpha = exp(-lambda)``."""
        return jnp.exp(-self.lam(t))

    def t_of_sigma_tilde(self, s):
        return self.t_of_lambda(-jnp.log(s))


class DiscretePath(Path):
    """A DDPM schedule's ``abar`` (``[T]``) on ``t = (i + 1) / T``; between
    the steps, ``log alpha`` is linear in ``t``."""

    def __init__(self, alphas_cumprod):
        abar = np.asarray(alphas_cumprod, np.float64)
        self.num_steps = abar.shape[0]
        self.t_min, self.t_max = 1.0 / self.num_steps, 1.0
        self._log_alpha = jnp.asarray(0.5 * np.log(abar), jnp.float32)
        # Increasing order for jnp.interp: log alpha decreases with the step.
        self._log_alpha_increasing = self._log_alpha[::-1]
        self._index_decreasing = jnp.arange(self.num_steps - 1, -1, -1,
                                            dtype=jnp.float32)

    def index(self, t):
        """The (fractional) step index ``t T - 1`` a DDPM network is fed."""
        return t * self.num_steps - 1.0

    def log_alpha(self, t):
        return jnp.interp(self.index(t), jnp.arange(self.num_steps, dtype=jnp.float32),
                          self._log_alpha)

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def t_of_lambda(self, lam):
        # A VP path: sigma^2 = 1 - alpha^2, so log alpha = -log(1 + e^{-2 lambda}) / 2.
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        index = jnp.interp(log_alpha, self._log_alpha_increasing, self._index_decreasing)
        return (index + 1.0) / self.num_steps


class SDEPath(Path):
    """The perturbation kernel of a score SDE on ``[eps, 1]``."""

    def __init__(self, sde: sde_lib.SDE, eps: float = 1e-3):
        self.sde, self.t_min, self.t_max = sde, eps, 1.0
        self.prior_std = sde.prior_std()

    def log_alpha(self, t):
        if self.sde.kind == "ve":
            return jnp.zeros_like(t)
        return self.sde._log_mean(t)  # pylint: disable=protected-access

    def sigma(self, t):
        return self.sde.marginal(t)[1]

    def t_of_lambda(self, lam):
        s = self.sde
        if s.kind == "ve":  # sigma = sigma_min (sigma_max / sigma_min)^t
            return (-lam - math.log(s.sigma_min)) / math.log(s.sigma_max / s.sigma_min)
        if s.kind == "vp":  # log alpha = -log(1 + e^{-2 lambda}) / 2
            log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        else:  # subvp: alpha / (1 - alpha^2) = e^lambda
            e = jnp.exp(lam)
            log_alpha = jnp.log((jnp.sqrt(1.0 + 4.0 * e * e) - 1.0) / (2.0 * e))
        # Solve (db / 4) t^2 + (b0 / 2) t + log alpha = 0 for t >= 0.
        db, b0 = s.beta_max - s.beta_min, s.beta_min
        return (-b0 + jnp.sqrt(b0 * b0 - 4.0 * db * log_alpha)) / db


class LinearPath(Path):
    """Flow matching's ``x_t = (1 - t) x_0 + t z`` (in the diffusion
    direction: noise at ``t = 1``), on ``[t_min, t_max]`` inside (0, 1)."""

    def __init__(self, t_min: float = 1e-3, t_max: float = 1.0 - 1e-3):
        self.t_min, self.t_max = t_min, t_max

    def log_alpha(self, t):
        return jnp.log1p(-t)

    def sigma(self, t):
        return t

    def t_of_lambda(self, lam):
        return jax.nn.sigmoid(-lam)


def _per_example(v, x):
    return jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))


# ---------------------------------------------------------------------------
# Time grids.


def time_grid(path: Path, num_steps: int, grid: str = "logsnr",
              rho: float = 7.0) -> jax.Array:
    """The ``num_steps`` times a sampler evaluates the network at: the first
    ``num_steps`` of ``num_steps + 1`` times from ``t_max`` down to
    ``t_min``, spaced ``uniform`` in t, ``logsnr`` uniform in lambda
    (DPM-Solver), or ``karras`` (EDM's ``(s_max^(1/rho) + k/N (s_min^(1/rho)
    - s_max^(1/rho)))^rho`` in ``sigma~``). float32 ``[num_steps]``.

    The last time is one interval above ``t_min``: the sampler's last move
    is from it to the data prediction there, so ``N`` evaluations make ``N``
    moves. (Ending the grid at ``t_min`` itself would spend the last
    evaluation on an image already at the data's end of the path, where
    the data prediction barely changes it: N evaluations, N - 1 moves.)"""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be at least 1")
    t_max = jnp.asarray(path.t_max, jnp.float32)
    t_min = jnp.asarray(path.t_min, jnp.float32)
    frac = jnp.linspace(0.0, 1.0, num_steps + 1)
    if grid == "uniform":
        ts = t_max + frac * (t_min - t_max)
    elif grid == "logsnr":
        lam = path.lam(t_max) + frac * (path.lam(t_min) - path.lam(t_max))
        ts = path.t_of_lambda(lam)
    elif grid == "karras":
        hi = path.sigma_tilde(t_max) ** (1.0 / rho)
        lo = path.sigma_tilde(t_min) ** (1.0 / rho)
        ts = path.t_of_sigma_tilde((hi + frac * (lo - hi)) ** rho)
    else:
        raise ValueError(f"grid={grid!r}; valid: {', '.join(GRIDS)}")
    # The start exactly, whatever the inversion's rounding.
    return ts.at[0].set(t_max)[:-1]


# ---------------------------------------------------------------------------
# The samplers.


def _call(x0_fn, x, t, *extra):
    return x0_fn(x, jnp.full((x.shape[0],), t, jnp.float32), *extra)


def ddim(x0_fn: X0Fn, path: Path, x_T, rng=None, *, num_steps: int = 50,
         eta: float = 0.0, grid: str = "uniform", times=None, noise_ids=None,
         keep_path: bool = False):
    """DDIM on the path: from ``t_k`` to ``t_{k+1}``,
    ``x = alpha' x0 + sqrt(sigma'^2 - c^2) eps + c z`` with ``eps`` the noise
    consistent with ``x0``, ``c = eta sigma' sqrt(1 - exp(2 (lambda -
    lambda')))`` (DDIM's sigma on a VP path), then the data prediction at the
    last time. ``times`` (decreasing) overrides the grid; transition ``k``
    draws its noise from ``fold_in(rng, noise_ids[k])`` (default ``k``).
    Returns ``(x0, nfe)``, and with ``keep_path`` ``(x0, path, nfe)`` where
    ``path`` ``[n, *shape]`` holds every step's result (``x0`` last)."""
    ts = time_grid(path, num_steps, grid) if times is None else jnp.asarray(times)
    n = ts.shape[0]
    if eta and rng is None:
        raise ValueError("ddim with eta > 0 needs an rng")
    ids = jnp.arange(n - 1) if noise_ids is None else jnp.asarray(noise_ids)

    def step(x, k):
        t, t_next = ts[k], ts[k + 1]
        x0 = _call(x0_fn, x, t)
        a, s = path.alpha(t), path.sigma(t)
        a_next, s_next = path.alpha(t_next), path.sigma(t_next)
        eps = (x - a * x0) / s
        c = eta * s_next * jnp.sqrt(jnp.maximum(
            -jnp.expm1(2.0 * (path.lam(t) - path.lam(t_next))), 0.0))
        x = a_next * x0 + jnp.sqrt(jnp.maximum(s_next**2 - c**2, 0.0)) * eps
        if eta:
            z = jax.random.normal(jax.random.fold_in(rng, ids[k]), x.shape, x.dtype)
            x = x + c * z
        return x, (x if keep_path else None)

    x, steps = jax.lax.scan(step, x_T, jnp.arange(n - 1))
    x0 = _call(x0_fn, x, ts[-1])
    if keep_path:
        return x0, jnp.concatenate([steps, x0[None]]), n
    return x0, n


def dpm_solver_pp(x0_fn: X0Fn, path: Path, x_T, rng=None, *, num_steps: int = 20,
                  order: int = 2, grid: str = "logsnr", times=None):
    """DPM-Solver++ multistep of ``order`` 1, 2 or 3 (Lu et al. 2022b): with
    ``h = lambda' - lambda``, ``phi1 = expm1(-h)``,

        x' = (sigma' / sigma) x - alpha' phi1 D0 + alpha' (phi1 / h + 1) D1
             - alpha' ((phi1 / h + 1) / h - 1/2) D2

    where ``D0`` is the newest data prediction and ``D1``, ``D2`` estimate
    its first and second derivatives in lambda (times h) from the previous
    predictions; order 2 is the paper's 2M update, ``D = D0 + (D0 - D_prev)
    / (2 r)`` with ``r = h_prev / h``. Orders ramp up from 1 at the start
    and, under 16 steps, down at the end. Returns ``(x0, nfe)``."""
    del rng
    if order not in (1, 2, 3):
        raise ValueError(f"order={order}; DPM-Solver++ here has orders 1, 2, 3")
    ts = time_grid(path, num_steps, grid) if times is None else jnp.asarray(times)
    n = ts.shape[0]
    lams = path.lam(ts)
    # The order of the transition from ts[k] to ts[k+1].
    orders = [min(order, k + 1) for k in range(n - 1)]
    if n < 16:
        orders = [min(o, n - 1 - k) for k, o in enumerate(orders)]
    orders = jnp.asarray(orders, jnp.int32)

    def step(carry, k):
        x, d1, d2 = carry  # d1, d2: the data predictions at ts[k-1], ts[k-2]
        t, t_next = ts[k], ts[k + 1]
        d0 = _call(x0_fn, x, t)
        lam, lam_next = lams[k], lams[k + 1]
        h = lam_next - lam
        a_next = path.alpha(t_next)
        phi1 = jnp.expm1(-h)
        base = (path.sigma(t_next) / path.sigma(t)) * x - a_next * phi1 * d0
        # Second order (2M): D = D0 + (D0 - D_prev) / (2 r), r = h_prev / h.
        h0 = lam - lams[jnp.maximum(k - 1, 0)]
        r0 = jnp.where(k >= 1, h0 / h, 1.0)
        diff0 = (d0 - d1) / r0
        second = base - 0.5 * a_next * phi1 * diff0
        # Third order (3M).
        h1 = lams[jnp.maximum(k - 1, 0)] - lams[jnp.maximum(k - 2, 0)]
        r1 = jnp.where(k >= 2, h1 / h, 1.0)
        diff1 = (d1 - d2) / r1
        big_d1 = diff0 + (r0 / (r0 + r1)) * (diff0 - diff1)
        big_d2 = (diff0 - diff1) / (r0 + r1)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        third = base + a_next * phi2 * big_d1 - a_next * phi3 * big_d2
        o = orders[k]
        x = jnp.where(o == 1, base, jnp.where(o == 2, second, third))
        return (x, d0, d1), None

    zeros = jnp.zeros_like(x_T)
    (x, _, _), _ = jax.lax.scan(step, (x_T, zeros, zeros), jnp.arange(n - 1))
    return _call(x0_fn, x, ts[-1]), n


def edm_heun(x0_fn: X0Fn, path: Path, x_T, rng=None, *, num_steps: int = 18,
             grid: str = "karras", rho: float = 7.0, times=None):
    """EDM's deterministic sampler (Karras et al. 2022, algorithm 1 without
    churn) on ``x~ = x / alpha``, ``sigma~ = sigma / alpha``: the ODE
    ``dx~/dsigma~ = (x~ - D(x~)) / sigma~``, Heun's steps between the
    ``num_steps`` levels and an Euler step from the last level to sigma~ = 0
    (which returns the data prediction). Returns ``(x0, nfe)``, ``nfe =
    2 num_steps - 1``."""
    del rng
    ts = (time_grid(path, num_steps, grid, rho) if times is None
          else jnp.asarray(times))
    n = ts.shape[0]
    sig = path.sigma_tilde(ts)

    def denoise(xt, k):  # D(x~, sigma~_k) through the path's x = alpha x~
        return _call(x0_fn, xt * path.alpha(ts[k]), ts[k])

    def step(xt, k):
        d = (xt - denoise(xt, k)) / sig[k]
        euler = xt + (sig[k + 1] - sig[k]) * d
        d_next = (euler - denoise(euler, k + 1)) / sig[k + 1]
        return xt + (sig[k + 1] - sig[k]) * 0.5 * (d + d_next), None

    xt, _ = jax.lax.scan(step, x_T / path.alpha(ts[0]), jnp.arange(n - 1))
    return denoise(xt, n - 1), 2 * n - 1


def adaptive(x0_fn: X0Fn, path: Path, x_T, rng=None, *, rtol: float = 1e-3,
             atol: float = 1e-3, max_steps: int = 4096, num_steps=None,
             per_example=None):
    """The probability-flow ODE in EDM's variables against ``u = log
    sigma~``, ``dx~/du = x~ - D(x~, u)``, from ``t_max`` to ``t_min`` by
    diffrax's Tsit5 with a PID controller, one solve per example; then the
    data prediction at ``t_min``. With ``per_example`` (a pytree of arrays
    with the batch axis first, e.g. labels) ``x0_fn`` is called as
    ``x0_fn(x, t, rows)`` with each example's own rows. Returns ``(x0,
    nfe [B])``."""
    del rng, num_steps
    with jax.ensure_compile_time_eval():  # constants, also under jit
        u0 = float(jnp.log(path.sigma_tilde(jnp.float32(path.t_max))))
        u1 = float(jnp.log(path.sigma_tilde(jnp.float32(path.t_min))))

    def velocity(xt, u, *rows):
        t = path.t_of_sigma_tilde(jnp.exp(u))
        x0 = x0_fn(xt * _per_example(path.alpha(t), xt), t, *rows)
        return xt - x0

    xt0 = x_T / path.alpha(jnp.float32(path.t_max))
    xt, nfe = sde_lib.adaptive_ode_sample(velocity, xt0, u0, u1, rtol=rtol, atol=atol,
                                          max_steps=max_steps, per_example=per_example)
    t_end = jnp.float32(path.t_min)
    extra = () if per_example is None else (per_example,)
    return _call(x0_fn, xt * path.alpha(t_end), t_end, *extra), nfe + 1


def dpm2(x0_fn, path, x_T, rng=None, **kw):
    return dpm_solver_pp(x0_fn, path, x_T, rng, order=2, **kw)


def dpm3(x0_fn, path, x_T, rng=None, **kw):
    return dpm_solver_pp(x0_fn, path, x_T, rng, order=3, **kw)


# name -> sampler(x0_fn, path, x_T, rng, *, num_steps, ...) -> (x0, nfe)
SAMPLERS = {"ddim": ddim, "dpm2": dpm2, "dpm3": dpm3, "heun": edm_heun,
            "adaptive": adaptive}


def x0_from_output(prediction: str, output, x, alpha, sigma):
    """The data prediction from a network ``output`` at ``x = alpha x0 +
    sigma z`` (``alpha``, ``sigma`` broadcast against ``x``): ``eps``
    (noise), ``x0``, ``v`` (Salimans & Ho 2022, VP paths), ``score``
    (``grad log p_t``) or ``velocity`` (``dx/dt = z - x0`` on the linear
    path)."""
    if prediction == "eps":
        return (x - sigma * output) / alpha
    if prediction == "x0":
        return output
    if prediction == "v":
        return alpha * x - sigma * output
    if prediction == "score":
        return (x + sigma * sigma * output) / alpha
    if prediction == "velocity":
        return x - sigma * output  # x = x0 + t v, sigma = t
    raise ValueError(f"prediction={prediction!r}; valid: eps, x0, v, score, velocity")


def score_from_x0(path: Path, x, t, x0):
    """The score ``(alpha x0 - x) / sigma^2`` of ``p_t`` at ``x`` from a data
    prediction (Tweedie's formula read backwards)."""
    a = _per_example(path.alpha(t), x)
    s = _per_example(path.sigma(t), x)
    return (a * x0 - x) / (s * s)
