"""Normalizing flows: invertible layers with tractable log-determinants.

Every bijector here is a Linen module with two methods,

    forward(x) -> (y, log_det)     log_det = log |det dy/dx|, one per example
    inverse(y) -> (x, log_det)     log_det = log |det dx/dy| = -forward's

both routed through ``__call__(x, inverse=False)`` so that one ``@nn.compact``
body declares the parameters for both directions. Arrays carry a leading
batch axis; images are ``[B, H, W, C]``, points ``[B, D]``. A flow's density
is ``log p(x) = log N(forward(x).y; 0, I) + forward(x).log_det``.

The layers (Dinh et al. 2015 NICE, 2017 RealNVP; Kingma & Dhariwal 2018
Glow; Durkan et al. 2019 neural spline flows):

- ``AffineCoupling``: half the units pass unchanged and condition a scale
  and shift of the other half; checkerboard or channel masks (images) or
  alternating feature masks (points). The log-scale is soft-clamped,
  ``bound * tanh(s / bound)``, so one step cannot blow it up. ``additive``
  drops the scale (NICE): volume preserving.
- ``SplineCoupling``: the other half goes through monotone rational-quadratic
  splines (``rational_quadratic_spline``) on ``[-bound, bound]``, identity
  (linear tails) outside.
- ``ActNorm``: a per-channel affine map whose parameters are set from the
  first batch the module sees at ``init`` (zero mean, unit variance per
  channel), then trained like any other parameter.
- ``InvertibleConv1x1``: a learned channel mixing ``W = P L (U + diag(e^s))``
  (the LU form of Glow, sec. 3.2): the determinant is ``sum(s)`` per pixel
  and ``W`` cannot become singular, since its diagonal factors are
  exponentials.
- ``Squeeze``: 2x2 space-to-depth; ``Logit``: the pre-transform of pixels in
  (0, 1) to the real line, with its Jacobian.
- ``MultiScaleFlow``: RealNVP's and Glow's multi-scale architectures, with
  half the channels factored out to the prior after every scale but the
  last; its latent is the flat ``[B, D]`` concatenation of everything
  factored out, in order.
- ``PointFlow``: a stack of couplings for vectors (the 2-D toy sets).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ARCHITECTURES = ("realnvp", "glow")
COUPLINGS = ("affine", "additive", "spline")


def sum_per_example(a: jax.Array) -> jax.Array:
    """Sums every axis but the leading (batch) one: ``[B, ...] -> [B]``."""
    return a.reshape(a.shape[0], -1).sum(axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """``log N(z; 0, I)`` per example, ``[B, ...] -> [B]``."""
    return sum_per_example(-0.5 * (z * z + math.log(2.0 * math.pi)))


class Bijector(nn.Module):
    """Base of every layer: ``forward``/``inverse`` call ``__call__``."""

    def forward(self, x):
        """``(y, log|det dy/dx|)``; log-det ``[B]``."""
        return self(x, inverse=False)

    def inverse(self, y):
        """``(x, log|det dx/dy|)``; log-det ``[B]``."""
        return self(y, inverse=True)


# ---------------------------------------------------------------------------
# Simple layers.


class Logit(Bijector):
    """``(0, 1)^D -> R^D``: ``y = logit(alpha + (1 - 2 alpha) x)`` (RealNVP,
    sec. 4.1, alpha = 0.05), which keeps the logit away from the infinite
    ends of pixels at 0 and 1. Its log-det counts in the density."""

    alpha: float = 0.05

    def __call__(self, x, inverse=False):
        a = self.alpha
        if not inverse:
            p = a + (1.0 - 2.0 * a) * x
            y = jnp.log(p) - jnp.log1p(-p)
            log_det = sum_per_example(math.log(1.0 - 2.0 * a) - jnp.log(p) - jnp.log1p(-p))
            return y, log_det
        p = jax.nn.sigmoid(x)
        out = (p - a) / (1.0 - 2.0 * a)
        # d out / d y = p (1 - p) / (1 - 2 alpha), with log p(1-p) stable.
        log_det = sum_per_example(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x)
                                  - math.log(1.0 - 2.0 * a))
        return out, log_det


class Squeeze(Bijector):
    """``[B, H, W, C] -> [B, H/2, W/2, 4C]``: every 2x2 patch becomes
    channels (RealNVP, fig. 3). Volume preserving."""

    def __call__(self, x, inverse=False):
        b = x.shape[0]
        zero = jnp.zeros((b,), x.dtype)
        if not inverse:
            _, h, w, c = x.shape
            if h % 2 or w % 2:
                raise ValueError(f"Squeeze needs even height and width, got {h}x{w}")
            y = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
            return y.reshape(b, h // 2, w // 2, 4 * c), zero
        _, h, w, c4 = x.shape
        c = c4 // 4
        y = x.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, 2 * h, 2 * w, c), zero


class ActNorm(Bijector):
    """``y = (x + bias) * exp(log_scale)`` per channel (the last axis).

    Data-dependent initialisation (Glow, sec. 3.1): when the module is
    initialised by a forward pass, ``bias`` and ``log_scale`` are set so that
    that batch comes out with zero mean and unit variance per channel. From
    then on they are ordinary parameters: saved, restored and trained.
    """

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x, inverse=False):
        c = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        data_init = self.is_initializing() and not inverse

        def init_bias(_):
            if data_init:
                return -jnp.mean(x, axis=axes)
            return jnp.zeros((c,), x.dtype)

        def init_log_scale(_):
            if data_init:
                return -jnp.log(jnp.std(x, axis=axes) + self.eps)
            return jnp.zeros((c,), x.dtype)

        bias = self.param("bias", init_bias)
        log_scale = self.param("log_scale", init_log_scale)
        shape = (1,) * (x.ndim - 1) + (c,)
        bias, log_scale = bias.reshape(shape), log_scale.reshape(shape)
        pixels = int(np.prod(x.shape[1:-1], dtype=np.int64))
        log_det = jnp.full((x.shape[0],), pixels * jnp.sum(log_scale), x.dtype)
        if not inverse:
            return (x + bias) * jnp.exp(log_scale), log_det
        return x * jnp.exp(-log_scale) - bias, -log_det


class InvertibleConv1x1(Bijector):
    """A 1x1 convolution ``y = W x`` per pixel, ``W = P L (U + diag(exp(s)))``.

    ``P`` is a fixed permutation (from ``seed``), ``L`` unit lower triangular
    and ``U`` strictly upper triangular (both learned), ``s`` learned.
    ``log|det W| = sum(s)`` needs no determinant, and ``W`` stays invertible
    whatever the training does (the plain parameterisation can go singular,
    openai/glow's "Input is not invertible"). At initialisation ``W = P``.
    """

    seed: int = 0

    @nn.compact
    def __call__(self, x, inverse=False):
        c = x.shape[-1]
        perm = np.random.default_rng([self.seed, c]).permutation(c)
        lower = self.param("lower", nn.initializers.zeros, (c, c), x.dtype)
        upper = self.param("upper", nn.initializers.zeros, (c, c), x.dtype)
        log_s = self.param("log_scale", nn.initializers.zeros, (c,), x.dtype)
        eye = jnp.eye(c, dtype=x.dtype)
        l_mat = jnp.tril(lower, -1) + eye
        u_mat = jnp.triu(upper, 1) + jnp.diag(jnp.exp(log_s))
        pixels = int(np.prod(x.shape[1:-1], dtype=np.int64))
        log_det = jnp.full((x.shape[0],), pixels * jnp.sum(log_s), x.dtype)
        if not inverse:
            # y = P L U x, with (P v)[i] = v[perm[i]]: rows of L U permuted.
            w = (l_mat @ u_mat)[perm]
            return jnp.einsum("...i,oi->...o", x, w), log_det
        # x = U^-1 L^-1 P^T y (two triangular solves of the identity);
        # P^T's columns put column perm[i] of U^-1 L^-1 at i.
        l_inv = jax.scipy.linalg.solve_triangular(l_mat, eye, lower=True,
                                                  unit_diagonal=True)
        u_inv = jax.scipy.linalg.solve_triangular(u_mat, eye, lower=False)
        w_inv = (u_inv @ l_inv)[:, perm]
        return jnp.einsum("...i,oi->...o", x, w_inv), -log_det


# ---------------------------------------------------------------------------
# Couplings.


def checkerboard(height: int, width: int, parity: int) -> np.ndarray:
    """``[H, W, 1]`` float mask, 1 where ``(i + j + parity)`` is even: the
    units that pass unchanged and condition the others."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return ((i + j + parity) % 2 == 0).astype(np.float32)[..., None]


class ConvConditioner(nn.Module):
    """The coupling's network on images: 3x3 conv, ``num_blocks`` residual
    blocks (3x3, 1x1), ReLU, and a zero-initialised 3x3 conv to ``out``
    channels, so that every coupling starts as the identity (Glow, sec. 3.3).
    No normalisation over the batch: eval sees no batch statistics."""

    hidden: int
    out: int
    num_blocks: int = 1
    # The convolutions' computation dtype (None: the input's), e.g. bfloat16
    # under mixed precision; parameters stay float32 and the output is
    # returned in the input's dtype.
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        d = self.dtype
        h = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME", dtype=d)(x))
        for _ in range(self.num_blocks):
            r = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME", dtype=d)(h))
            r = nn.Conv(self.hidden, (1, 1), dtype=d)(r)
            h = nn.relu(h + r)
        return nn.Conv(self.out, (3, 3), padding="SAME", dtype=d,
                       kernel_init=nn.initializers.zeros)(h).astype(x.dtype)


class MLPConditioner(nn.Module):
    """The coupling's network on vectors: ``num_layers`` ReLU layers and a
    zero-initialised output layer."""

    hidden: int
    out: int
    num_layers: int = 2
    dtype: Any = None  # as ConvConditioner's

    @nn.compact
    def __call__(self, x):
        h = x
        for _ in range(self.num_layers):
            h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
        return nn.Dense(self.out, kernel_init=nn.initializers.zeros,
                        dtype=self.dtype)(h).astype(x.dtype)


def _split_mask(x_shape, mask: str, parity: int) -> np.ndarray:
    """The 0/1 mask of the units that condition (1) and pass unchanged."""
    if mask == "checkerboard":
        _, h, w, _ = x_shape
        return checkerboard(h, w, parity)
    if mask == "channel":
        c = x_shape[-1]
        m = (np.arange(c) < c // 2).astype(np.float32)
        return m if parity == 0 else 1.0 - m
    raise ValueError(f"unknown coupling mask {mask!r}; valid: checkerboard, channel")


def _vector_mask(dims: int, parity: int) -> np.ndarray:
    m = (np.arange(dims) % 2 == parity).astype(np.float32)
    return m


class _Coupling(Bijector):
    """What the couplings share: which units condition, and the network."""

    mask: str = "checkerboard"  # checkerboard | channel (images) | vector
    parity: int = 0
    hidden: int = 64
    num_blocks: int = 1
    # Recompute the conditioner network's activations in the backward pass.
    remat: bool = False
    # The conditioner network's computation dtype (None: float32). The
    # coupling's own arithmetic (scales, shifts, log-dets) stays float32.
    compute_dtype: Any = None

    def _mask(self, x) -> np.ndarray:
        """The mask with a leading axis of 1, of ``x``'s rank."""
        if self.mask == "vector":
            m = _vector_mask(x.shape[-1], self.parity)
        else:
            m = _split_mask(x.shape, self.mask, self.parity)
        return m.reshape((1,) * (x.ndim - m.ndim) + m.shape)

    def _conditioner(self, x, out_per_unit: int, mask: np.ndarray):
        """The network's output for every unit: ``[..., C, out_per_unit]``,
        from the conditioning units alone."""
        c = x.shape[-1]
        # Named as Flax names them unwrapped, so remat keeps the parameters'.
        conv = nn.remat(ConvConditioner) if self.remat else ConvConditioner
        if self.mask == "vector":
            mlp = nn.remat(MLPConditioner) if self.remat else MLPConditioner
            net = mlp(self.hidden, c * out_per_unit, self.num_blocks,
                      self.compute_dtype, name="MLPConditioner_0")
            out = net(x * mask)
        elif self.mask == "channel":
            keep = np.nonzero(mask.reshape(-1))[0]
            net = conv(self.hidden, c * out_per_unit, self.num_blocks,
                       self.compute_dtype, name="ConvConditioner_0")
            out = net(x[..., keep])
        else:
            # The mask itself is an input channel: the network knows which
            # units are zeros because they are masked.
            m = jnp.broadcast_to(jnp.asarray(mask[..., :1], x.dtype), x.shape[:-1] + (1,))
            net = conv(self.hidden, c * out_per_unit, self.num_blocks,
                       self.compute_dtype, name="ConvConditioner_0")
            out = net(jnp.concatenate([x * mask, m], axis=-1))
        return out.reshape(out.shape[:-1] + (c, out_per_unit))


class AffineCoupling(_Coupling):
    """``y = m x + (1 - m) (x exp(s) + t)``, ``(s, t) = net(m x)``.

    ``s`` is soft-clamped to ``(-scale_bound, scale_bound)``; ``additive``
    (NICE) drops it."""

    additive: bool = False
    scale_bound: float = 2.0

    @nn.compact
    def __call__(self, x, inverse=False):
        mask = self._mask(x)
        params = self._conditioner(x, 1 if self.additive else 2, mask)
        free = 1.0 - mask
        shift = params[..., 0] * free
        if self.additive:
            log_scale = jnp.zeros_like(x)
        else:
            b = self.scale_bound
            log_scale = b * jnp.tanh(params[..., 1] / b) * free
        log_det = sum_per_example(log_scale)
        if not inverse:
            return x * jnp.exp(log_scale) + shift, log_det
        return (x - shift) * jnp.exp(-log_scale), -log_det


def rational_quadratic_spline(x, raw_widths, raw_heights, raw_derivatives, *,
                              inverse: bool = False, bound: float = 3.0,
                              min_width: float = 1e-3, min_height: float = 1e-3,
                              min_derivative: float = 1e-3):
    """Monotone rational-quadratic spline (Durkan et al. 2019; Gregory &
    Delbourgo 1982), elementwise, on ``[-bound, bound]`` with identity
    (linear) tails outside.

    ``raw_widths``/``raw_heights`` ``[..., K]`` and ``raw_derivatives``
    ``[..., K - 1]`` (the interior knots; the end knots have slope 1 so that
    the tails join smoothly) are unconstrained. Bins are at least
    ``min_width``/``min_height`` of the range wide and the slopes at least
    ``min_derivative``, which keeps every division and the inverse's square
    root away from zero. Returns ``(y, log|dy/dx|)`` elementwise (for
    ``inverse``, ``(x, log|dx/dy|)``).
    """
    k = raw_widths.shape[-1]

    def knots(raw, minimum):
        frac = minimum + (1.0 - minimum * k) * jax.nn.softmax(raw, axis=-1)
        cum = jnp.cumsum(frac, axis=-1)
        cum = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum], axis=-1)
        edges = 2.0 * bound * cum - bound
        # The last edge is exactly +bound, whatever the rounding.
        edges = edges.at[..., -1].set(bound)
        return edges, edges[..., 1:] - edges[..., :-1]

    xs, widths = knots(raw_widths, min_width)
    ys, heights = knots(raw_heights, min_height)
    ones = jnp.ones_like(raw_derivatives[..., :1])
    # Shifted so that raw zeros give slope 1: with equal bins (raw zeros
    # again) the spline is then the identity, as a zero-initialised
    # conditioner's coupling should be.
    shift = math.log(math.expm1(1.0 - min_derivative))
    derivs = jnp.concatenate(
        [ones, min_derivative + jax.nn.softplus(raw_derivatives + shift), ones], axis=-1)

    inside = (x > -bound) & (x < bound)
    xc = jnp.clip(x, -bound, bound)
    edges = ys if inverse else xs
    # Bin of each unit: the number of interior edges at or below it.
    idx = jnp.sum(xc[..., None] >= edges[..., 1:-1], axis=-1)[..., None]

    def pick(a):
        return jnp.take_along_axis(a, idx, axis=-1)[..., 0]

    x_k, y_k = pick(xs[..., :-1]), pick(ys[..., :-1])
    w_k, h_k = pick(widths), pick(heights)
    d_k, d_k1 = pick(derivs[..., :-1]), pick(derivs[..., 1:])
    s_k = h_k / w_k
    delta = d_k + d_k1 - 2.0 * s_k
    if not inverse:
        xi = jnp.clip((xc - x_k) / w_k, 0.0, 1.0)
        t = xi * (1.0 - xi)
        denom = s_k + delta * t
        y = y_k + h_k * (s_k * xi * xi + d_k * t) / denom
        dydx = s_k * s_k * (d_k1 * xi * xi + 2.0 * s_k * t + d_k * (1.0 - xi) ** 2) / denom ** 2
        log_det = jnp.log(dydx)
        return jnp.where(inside, y, x), jnp.where(inside, log_det, 0.0)
    dy = xc - y_k
    a = h_k * (s_k - d_k) + dy * delta
    b = h_k * d_k - dy * delta
    c = -s_k * dy
    disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
    # The root in [0, 1], in the form that avoids cancellation (b > 0 here).
    xi = jnp.clip(2.0 * c / (-b - jnp.sqrt(disc)), 0.0, 1.0)
    out = x_k + xi * w_k
    t = xi * (1.0 - xi)
    denom = s_k + delta * t
    dydx = s_k * s_k * (d_k1 * xi * xi + 2.0 * s_k * t + d_k * (1.0 - xi) ** 2) / denom ** 2
    log_det = -jnp.log(dydx)
    return jnp.where(inside, out, x), jnp.where(inside, log_det, 0.0)


class SplineCoupling(_Coupling):
    """The free units go through rational-quadratic splines whose bins and
    slopes the network computes from the conditioning units (neural spline
    flows, Durkan et al. 2019, RQ-NSF (C))."""

    num_bins: int = 8
    bound: float = 3.0

    @nn.compact
    def __call__(self, x, inverse=False):
        mask = self._mask(x)
        k = self.num_bins
        params = self._conditioner(x, 3 * k - 1, mask)
        widths, heights, derivs = params[..., :k], params[..., k:2 * k], params[..., 2 * k:]
        y, log_det = rational_quadratic_spline(x, widths, heights, derivs,
                                               inverse=inverse, bound=self.bound)
        free = 1.0 - mask
        y = mask * x + free * y
        return y, sum_per_example(log_det * free)


def make_coupling(kind: str, *, mask: str, parity: int, hidden: int, num_blocks: int,
                  num_bins: int, spline_bound: float, scale_bound: float,
                  name: str, remat: bool = False, compute_dtype=None) -> _Coupling:
    """A coupling layer by name: ``affine``, ``additive`` or ``spline``;
    each takes the keys that concern it."""
    common = dict(mask=mask, parity=parity, hidden=hidden, num_blocks=num_blocks,
                  name=name, remat=remat, compute_dtype=compute_dtype)
    if kind in ("affine", "additive"):
        return AffineCoupling(additive=kind == "additive", scale_bound=scale_bound,
                              **common)
    if kind == "spline":
        return SplineCoupling(num_bins=num_bins, bound=spline_bound, **common)
    raise ValueError(f"unknown coupling {kind!r}; valid: {', '.join(COUPLINGS)}")


# ---------------------------------------------------------------------------
# Whole flows.


class Chain(Bijector):
    """Bijectors applied in order (``inverse``: in reverse order)."""

    layers: Sequence[Bijector]

    def __call__(self, x, inverse=False):
        total = jnp.zeros((x.shape[0],), x.dtype)
        for layer in (reversed(self.layers) if inverse else self.layers):
            x, log_det = layer(x, inverse=inverse)
            total = total + log_det
        return x, total


class SplitPrior(nn.Module):
    """Glow's learned prior for the factored-out half (``split2d``): given
    the kept half ``h``, the factored-out ``o`` is ``N(mu(h), sigma(h)^2)``.
    Written as the affine map ``z = (o - mu) / sigma`` to a standard normal
    (log-det ``-sum log sigma``), so that every latent of the flow stays
    ``N(0, I)`` and a temperature scales them all alike. The network is
    zero-initialised: at first the prior is ``N(0, I)``, as without it."""

    hidden: int = 64
    scale_bound: float = 2.0

    @nn.compact
    def __call__(self, kept, out, inverse=False):
        params = ConvConditioner(self.hidden, 2 * out.shape[-1], num_blocks=0)(kept)
        mean, raw = params[..., 0::2], params[..., 1::2]
        b = self.scale_bound
        log_std = b * jnp.tanh(raw / b)
        log_det = -sum_per_example(log_std)
        if not inverse:
            return (out - mean) * jnp.exp(-log_std), log_det
        return out * jnp.exp(log_std) + mean, -log_det


class MultiScaleFlow(nn.Module):
    """RealNVP's or Glow's multi-scale flow on images in ``(0, 1)``.

    ``architecture``:
      - ``realnvp`` (Dinh et al. 2017, sec. 3.6): every scale but the last
        has 3 checkerboard couplings, a squeeze and 3 channel couplings,
        then half the channels are factored out; the last scale has 4
        checkerboard couplings. An ActNorm precedes every coupling (in place
        of the paper's batch normalisation, which would make the density of
        an example depend on its batch).
      - ``glow`` (Kingma & Dhariwal 2018, fig. 2): every scale squeezes,
        then ``steps_per_scale`` steps of ActNorm, invertible 1x1
        convolution and a channel coupling, then factors out half the
        channels (but the last).

    ``split_prior`` (Glow's default) models each factored-out half given the
    kept half (``SplitPrior``) instead of as ``N(0, I)`` directly (RealNVP).

    The first layer is ``Logit(alpha)``: the flow's density is on ``(0, 1)^D``
    (pixels uniformly dequantised to ``(k + u) / 256``). ``forward(x)``
    returns the flat latent ``[B, D]`` and the log-det; ``inverse(z)`` maps
    a flat latent back to images.
    """

    image_shape: tuple[int, int, int]
    architecture: str = "glow"
    num_scales: int = 2
    steps_per_scale: int = 8
    hidden: int = 64
    num_blocks: int = 1
    coupling: str = "affine"
    num_bins: int = 8
    spline_bound: float = 3.0
    scale_bound: float = 2.0
    logit_alpha: float = 0.05
    split_prior: bool = False
    # Recompute each coupling network's activations in the backward pass
    # (flax.linen.remat): less memory for one more forward pass, same numbers.
    remat: bool = False
    # The coupling networks' computation dtype (None: float32): bfloat16 for
    # mixed-precision training. Everything else (the logit transform, the
    # log-determinants, the priors) stays float32, where the exact
    # likelihood needs it.
    compute_dtype: Any = None

    def setup(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown flow architecture {self.architecture!r}; "
                             f"valid: {', '.join(ARCHITECTURES)}")
        self.logit = Logit(self.logit_alpha)
        scales = []
        shapes = []  # The shape of what each scale factors out (or ends with).
        h, w, c = self.image_shape
        index = 0
        for scale in range(self.num_scales):
            last = scale == self.num_scales - 1
            layers = []

            def coupling(mask, parity, idx):
                return make_coupling(
                    self.coupling, mask=mask, parity=parity, hidden=self.hidden,
                    num_blocks=self.num_blocks, num_bins=self.num_bins,
                    spline_bound=self.spline_bound, scale_bound=self.scale_bound,
                    name=f"coupling_{idx}", remat=self.remat,
                    compute_dtype=self.compute_dtype)

            if self.architecture == "realnvp":
                for i in range(4 if last else 3):
                    layers += [ActNorm(name=f"actnorm_{index}"),
                               coupling("checkerboard", i % 2, index)]
                    index += 1
                if not last:
                    layers.append(Squeeze())
                    h, w, c = self._squeezed(h, w, c)
                    for i in range(3):
                        layers += [ActNorm(name=f"actnorm_{index}"),
                                   coupling("channel", i % 2, index)]
                        index += 1
            else:
                layers.append(Squeeze())
                h, w, c = self._squeezed(h, w, c)
                for i in range(self.steps_per_scale):
                    layers += [ActNorm(name=f"actnorm_{index}"),
                               InvertibleConv1x1(seed=index, name=f"invconv_{index}"),
                               coupling("channel", i % 2, index)]
                    index += 1
            scales.append(Chain(layers, name=f"scale_{scale}"))
            if last:
                shapes.append((h, w, c))
            else:
                shapes.append((h, w, c - c // 2))
                c = c // 2
        self.scales = scales
        self.latent_shapes = tuple(shapes)
        if self.split_prior:
            self.priors = [SplitPrior(self.hidden, self.scale_bound, name=f"prior_{i}")
                           for i in range(self.num_scales - 1)]

    @staticmethod
    def _squeezed(h, w, c):
        if h % 2 or w % 2:
            raise ValueError(
                f"a {h}x{w} feature map cannot be squeezed; use fewer "
                "model.num_scales")
        return h // 2, w // 2, 4 * c

    def forward(self, x):
        """Images ``[B, H, W, C]`` in (0, 1) -> ``(z [B, D], log_det [B])``."""
        h, total = self.logit(x)
        parts = []
        for i, scale in enumerate(self.scales):
            h, log_det = scale(h)
            total = total + log_det
            if i < len(self.scales) - 1:
                keep = h.shape[-1] // 2
                out, h = h[..., keep:], h[..., :keep]
                if self.split_prior:
                    out, log_det = self.priors[i](h, out)
                    total = total + log_det
                parts.append(out.reshape(out.shape[0], -1))
        parts.append(h.reshape(h.shape[0], -1))
        return jnp.concatenate(parts, axis=-1), total

    def inverse(self, z):
        """Flat latents ``[B, D]`` -> ``(images in (0, 1), log|det dx/dz|)``."""
        b = z.shape[0]
        sizes = [int(np.prod(s)) for s in self.latent_shapes]
        pieces = jnp.split(z, np.cumsum(sizes)[:-1], axis=-1)
        total = jnp.zeros((b,), z.dtype)
        h = pieces[-1].reshape((b,) + self.latent_shapes[-1])
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                out = pieces[i].reshape((b,) + self.latent_shapes[i])
                if self.split_prior:
                    out, log_det = self.priors[i](h, out, inverse=True)
                    total = total + log_det
                h = jnp.concatenate([h, out], axis=-1)
            h, log_det = self.scales[i](h, inverse=True)
            total = total + log_det
        x, log_det = self.logit(h, inverse=True)
        return x, total + log_det

    def __call__(self, x):
        return self.forward(x)


class PointFlow(nn.Module):
    """Couplings for vectors ``[B, D]`` (the 2-D toy sets): ``num_layers``
    couplings of alternating halves, each after an ActNorm."""

    dims: int = 2
    num_layers: int = 8
    hidden: int = 64
    num_hidden_layers: int = 2
    coupling: str = "affine"
    num_bins: int = 8
    spline_bound: float = 4.0
    scale_bound: float = 2.0
    compute_dtype: Any = None  # as MultiScaleFlow's

    def setup(self):
        layers = []
        for i in range(self.num_layers):
            layers.append(ActNorm(name=f"actnorm_{i}"))
            layers.append(make_coupling(
                self.coupling, mask="vector", parity=i % 2, hidden=self.hidden,
                num_blocks=self.num_hidden_layers, num_bins=self.num_bins,
                spline_bound=self.spline_bound, scale_bound=self.scale_bound,
                name=f"coupling_{i}", compute_dtype=self.compute_dtype))
        self.chain = Chain(layers)

    def forward(self, x):
        """Points ``[B, D]`` -> ``(z [B, D], log_det [B])``."""
        return self.chain(x)

    def inverse(self, z):
        """Latents ``[B, D]`` -> ``(points, log|det dx/dz|)``."""
        return self.chain(z, inverse=True)

    def __call__(self, x):
        return self.forward(x)
