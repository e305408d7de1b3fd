"""Variational autoencoder (Kingma & Welling 2013): pure Linen modules.

The encoder maps x to the mean and log-variance of a diagonal Gaussian
q(z|x); the decoder maps z to the parameters of p(x|z) (Bernoulli logits, or a
Gaussian mean and log-scale per pixel). No losses, optimisers or data here:
see ``genjax.objectives.elbo``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


_ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu,
                "softplus": nn.softplus, "elu": nn.elu}
ACTIVATIONS = tuple(_ACTIVATIONS)
ARCHITECTURES = ("mlp", "conv")
PRIORS = ("standard", "vamp")


def _activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"model.activation={name!r}; valid: {', '.join(ACTIVATIONS)}"
        ) from None


def _with_condition(h, cond):
    """``h [N, F]`` with the condition ``cond [N, K]`` (a one-hot class)
    appended, or ``h`` unchanged when ``cond`` is None."""
    return h if cond is None else jnp.concatenate([h, cond.astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
    """x ``[B, H, W, C]`` -> (mean, logvar), each ``[B, latents]``."""

    hidden: Sequence[int]
    latents: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, cond=None):
        act = _activation(self.activation)
        h = _with_condition(x.reshape(x.shape[0], -1), cond)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, name=f"hidden_{i}")(h))
        mean = nn.Dense(self.latents, name="mean")(h)
        logvar = nn.Dense(self.latents, name="logvar")(h)
        return mean, logvar


class MLPDecoder(nn.Module):
    """z ``[B, latents]`` -> ``[B, H, W, C * params_per_pixel]``."""

    hidden: Sequence[int]
    image_shape: Sequence[int]
    params_per_pixel: int = 1
    activation: str = "relu"

    @nn.compact
    def __call__(self, z, cond=None):
        act = _activation(self.activation)
        h = _with_condition(z, cond)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, name=f"hidden_{i}")(h))
        height, width, channels = self.image_shape
        out = nn.Dense(height * width * channels * self.params_per_pixel,
                       name="out")(h)
        return out.reshape(z.shape[0], height, width,
                           channels * self.params_per_pixel)


class ConvEncoder(nn.Module):
    """Strided convolutions, then dense heads; for 28x28 or 32x32 images."""

    features: Sequence[int]
    latents: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, cond=None):
        act = _activation(self.activation)
        h = x
        for i, f in enumerate(self.features):
            h = act(nn.Conv(f, (4, 4), strides=(2, 2), padding="SAME",
                            name=f"conv_{i}")(h))
        h = _with_condition(h.reshape(h.shape[0], -1), cond)
        mean = nn.Dense(self.latents, name="mean")(h)
        logvar = nn.Dense(self.latents, name="logvar")(h)
        return mean, logvar


class ConvDecoder(nn.Module):
    """Dense to a small feature map, then transposed convolutions up."""

    features: Sequence[int]
    image_shape: Sequence[int]
    params_per_pixel: int = 1
    activation: str = "relu"

    @nn.compact
    def __call__(self, z, cond=None):
        act = _activation(self.activation)
        z = _with_condition(z, cond)
        height, width, channels = self.image_shape
        factor = 2 ** len(self.features)
        if height % factor or width % factor:
            raise ValueError(
                f"conv decoder with {len(self.features)} upsamplings needs "
                f"image sides divisible by {factor}, got {height}x{width}")
        h0, w0 = height // factor, width // factor
        h = act(nn.Dense(h0 * w0 * self.features[0], name="project")(z))
        h = h.reshape(z.shape[0], h0, w0, self.features[0])
        for i, f in enumerate(self.features):
            h = act(nn.ConvTranspose(f, (4, 4), strides=(2, 2), padding="SAME",
                                     name=f"deconv_{i}")(h))
        return nn.Conv(channels * self.params_per_pixel, (3, 3), padding="SAME",
                       name="out")(h)


class VAE(nn.Module):
    """Encoder + decoder with the reparameterisation trick.

    Attributes:
      architecture: "mlp" or "conv".
      hidden: MLP widths (encoder; reversed for the decoder) or conv features.
      latents: dimension of z.
      image_shape: (H, W, C).
      params_per_pixel: 1 (Bernoulli logits) or 2 (Gaussian mean, log-scale).
      num_classes: > 0 for a conditional VAE (Sohn et al. 2015): the label,
        one-hot, is appended to the encoder's flattened features and to z
        before the decoder, q(z|x, y) and p(x|z, y); labels are then required.
      prior: "standard", p(z) = N(0, I); or "vamp", the VampPrior (Tomczak &
        Welling 2018): the mixture of the encoder's posteriors at
        ``pseudo_inputs`` learned images, ``(1/K) sum_k q(z|u_k)``.
      pseudo_inputs: K for the VampPrior.
    """

    architecture: str
    hidden: Sequence[int]
    latents: int
    image_shape: Sequence[int]
    params_per_pixel: int = 1
    activation: str = "relu"
    num_classes: int = 0
    prior: str = "standard"
    pseudo_inputs: int = 0

    def setup(self):
        if self.prior == "vamp":
            if self.pseudo_inputs < 1 or self.num_classes:
                raise ValueError("the VampPrior needs pseudo_inputs >= 1 and an "
                                 "unconditional VAE")
            # Tomczak & Welling's MNIST initialisation: N(0.05, 0.01), kept
            # in [0, 1] by a hard clip where they are used.
            self.pseudo = self.param(
                "pseudo_inputs",
                lambda rng, shape: 0.05 + 0.01 * jax.random.normal(rng, shape),
                (self.pseudo_inputs,) + tuple(self.image_shape))
        elif self.prior != "standard":
            raise ValueError(f"model.prior={self.prior!r}; valid: {', '.join(PRIORS)}")
        if self.architecture == "mlp":
            self.encoder = MLPEncoder(self.hidden, self.latents, self.activation)
            self.decoder = MLPDecoder(tuple(reversed(self.hidden)),
                                      self.image_shape, self.params_per_pixel,
                                      self.activation)
        elif self.architecture == "conv":
            self.encoder = ConvEncoder(self.hidden, self.latents, self.activation)
            self.decoder = ConvDecoder(tuple(reversed(self.hidden)),
                                       self.image_shape, self.params_per_pixel,
                                       self.activation)
        else:
            raise ValueError(
                f"model.architecture={self.architecture!r}; valid: mlp, conv")

    def _cond(self, labels, rows: int):
        """The one-hot condition for ``rows`` inputs: the labels ``[B]``
        repeated ``rows // B`` times (a chunk of importance samples is laid
        out sample-major, ``[k * B]``)."""
        if (labels is None) != (self.num_classes == 0):
            raise ValueError(
                f"VAE(num_classes={self.num_classes}) called "
                f"{'without' if labels is None else 'with'} labels")
        if labels is None:
            return None
        onehot = jax.nn.one_hot(labels, self.num_classes)
        return jnp.tile(onehot, (rows // labels.shape[0], 1))

    def encode(self, x, labels=None):
        """q(z|x[, y]) parameters: (mean, logvar)."""
        return self.encoder(x, self._cond(labels, x.shape[0]))

    def decode(self, z, labels=None):
        """p(x|z[, y]) parameters."""
        return self.decoder(z, self._cond(labels, z.shape[0]))

    def prior_components(self):
        """The VampPrior's components: the encoder's (mean, logvar) at the
        pseudo-inputs, each ``[K, latents]``."""
        return self.encoder(jnp.clip(self.pseudo, 0.0, 1.0))

    def __call__(self, x, rng, labels=None):
        """One reparameterised pass: (decoder output, mean, logvar, z)."""
        mean, logvar = self.encode(x, labels)
        z = reparameterize(rng, mean, logvar)
        if self.prior == "vamp":  # creates the pseudo-inputs at init
            self.prior_components()
        return self.decode(z, labels), mean, logvar, z


def reparameterize(rng, mean, logvar):
    """z = mean + sigma * eps, eps ~ N(0, I) (Kingma & Welling 2013, eq. 10)."""
    eps = jax.random.normal(rng, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps
