"""GAN generators and discriminators (Linen modules only).

Two architectures, for 28x28 grey and 32x32 colour images (any size that a
7x7 or 4x4 seed doubles up to):

* ``mlp``: Goodfellow et al. 2014 (MNIST): the generator is an MLP of
  rectified linear units; the discriminator an MLP of maxout units with
  dropout.
* ``dcgan``: Radford et al. 2015: a projected-and-reshaped seed, strided
  transposed convolutions with batch norm and ReLU in the generator, tanh at
  its output; strided convolutions with leaky ReLU (slope 0.2) in the
  discriminator, batch norm on every layer but its input layer (or, with
  ``d_norm='spectral'``, every discriminator layer spectrally normalised,
  Miyato et al. 2018, and no batch norm). Optionally
  (``dense_hidden``) a fully connected layer before the generator's
  projection and before the discriminator's logit, as in the MNIST networks
  of Chen et al. 2016 (InfoGAN).

Images live in [-1, 1] inside the models (the tanh range); tasks convert from
and to the [0, 1] pixels of the data. Discriminators return one logit per
example, ``[B]``. Batch norm uses the batch statistics of its input in
training (``train=True``) and its running averages otherwise; under
``jax.jit`` over a sharded batch, those statistics are over the global batch
(every device), which is synchronised batch norm.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ARCHITECTURES = ("mlp", "dcgan")
G_NORMS = ("batch", "none")
# The discriminator may also use spectral normalisation (Miyato et al. 2018).
D_NORMS = ("batch", "none", "spectral")

# DCGAN, section 4: weights from N(0, 0.02).
_DCGAN_INIT = nn.initializers.normal(0.02)


def seed_size(image_size: int) -> tuple[int, int]:
    """``(seed side, number of doublings)``: 28 -> (7, 2), 32 -> (4, 3).

    The generator starts from a ``seed x seed`` map and doubles it until it
    reaches ``image_size``; the seed is the largest power-of-two division that
    leaves a side of at least 4.
    """
    doublings = 0
    side = image_size
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        doublings += 1
    if doublings == 0:
        raise ValueError(
            f"image side {image_size} cannot be reached by doubling a seed of "
            "at least 4 pixels; use e.g. 28 or 32")
    return side, doublings


class MLPGenerator(nn.Module):
    """z -> image through ReLU layers (Goodfellow et al. 2014, MNIST)."""

    image_shape: tuple[int, int, int]
    hidden: Sequence[int] = (1200, 1200)

    @nn.compact
    def __call__(self, z, train: bool = True):
        del train  # No batch norm or dropout.
        h = z
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        x = nn.Dense(math.prod(self.image_shape))(h)
        return jnp.tanh(x).reshape((z.shape[0],) + tuple(self.image_shape))


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): the max over ``pieces`` affine maps."""

    features: int
    pieces: int

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.features * self.pieces)(x)
        h = h.reshape(x.shape[:-1] + (self.features, self.pieces))
        return jnp.max(h, axis=-1)


class MLPDiscriminator(nn.Module):
    """image -> logit through maxout layers with dropout (Goodfellow et al. 2014).

    Dropout needs an ``rngs={'dropout': key}`` argument when ``train``.
    """

    hidden: Sequence[int] = (240, 240)
    pieces: int = 5
    input_dropout: float = 0.2
    dropout: float = 0.5
    num_classes: int = 0  # > 0: class-conditional by projection (labels required)

    @nn.compact
    def __call__(self, x, train: bool = True, labels=None):
        h = x.reshape((x.shape[0], -1))
        h = nn.Dropout(self.input_dropout, deterministic=not train)(h)
        for width in self.hidden:
            h = Maxout(width, self.pieces)(h)
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return project_labels(nn.Dense(1)(h)[:, 0], h, labels, self.num_classes)


def project_labels(logit, h, labels, num_classes: int):
    """The projection discriminator (Miyato & Koyama 2018):
    ``logit + <embed(y), h>`` with ``h`` the features before the logit;
    ``logit`` unchanged for an unconditional discriminator (``num_classes``
    0, no labels). Call inside a compact module."""
    if (labels is None) != (num_classes == 0):
        raise ValueError(f"a discriminator with num_classes={num_classes} called "
                         f"{'without' if labels is None else 'with'} labels")
    if labels is None:
        return logit
    embed = nn.Embed(num_classes, h.shape[-1], name="class_embed",
                     embedding_init=nn.initializers.normal(0.02))(labels)
    return logit + jnp.sum(embed * h, axis=-1)


# Below this many output channels upsample_conv uses lax.conv_transpose: on a
# 2-core CPU, 32 -> 1 channels at 14x14 -> 28x28 took 6.4 ms (forward and
# both gradients, batch 64) that way and 9.7 ms by phases; 64 -> 32 at 7x7
# took 59 ms that way and 19 ms by phases.
_MIN_PHASE_CHANNELS = 8


def upsample_conv(x, kernel):
    """The stride-2, 4x4, 'SAME' transposed convolution, computed by phases.

    Equals ``jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME')`` (NHWC,
    HWIO): output pixel ``2m + a`` (a in {0, 1}) of each spatial axis is
    ``x[m - 1 + a] w[a] + x[m + a] w[a + 2]``. The four output phases are one
    2x2 convolution with ``4 * Cout`` channels over the input padded by one,
    then interleaved. XLA:CPU computes the transposed convolution's gradient
    as a convolution with a dilated input, about twice as slow as this.

    Args:
      x: ``[B, H, W, Cin]``.
      kernel: ``[4, 4, Cin, Cout]``.

    Returns:
      ``[B, 2H, 2W, Cout]``.
    """
    batch, height, width, cin = x.shape
    cout = kernel.shape[-1]
    if cout < _MIN_PHASE_CHANNELS:
        # Few output channels (an image layer): the interleave costs more
        # than the dilated convolution's gradient saves (measured).
        return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # kernel[2u + a, 2v + b] is tap (u, v) of phase (a, b).
    phases = kernel.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 4, 1, 3, 5)
    phases = phases.reshape(2, 2, cin, 4 * cout)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = jax.lax.conv_general_dilated(
        padded, phases, (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y.reshape(batch, height + 1, width + 1, 2, 2, cout)
    rows = [jnp.stack([y[:, a:a + height, b:b + width, a, b] for b in (0, 1)],
                      axis=3) for a in (0, 1)]  # each [B, H, W, 2, Cout]
    return jnp.stack(rows, axis=2).reshape(batch, 2 * height, 2 * width, cout)


class UpConv(nn.Module):
    """A stride-2 4x4 transposed convolution ('SAME'): ``[B,H,W,C] -> [B,2H,2W,F]``.

    The parameters are those of ``nn.ConvTranspose(F, (4, 4), (2, 2),
    'SAME')``; only the computation differs (``upsample_conv``).
    """

    features: int
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = _DCGAN_INIT

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init,
                            (4, 4, x.shape[-1], self.features))
        y = upsample_conv(x, kernel)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            y = y + bias.reshape(1, 1, 1, -1)
        return y


def _norm(kind: str, train: bool):
    if kind == "batch":
        # DCGAN's momentum for the running averages that sampling uses.
        return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                            epsilon=1e-5)
    return lambda h: h


class DCGANGenerator(nn.Module):
    """z -> image: project to a seed map, then doubling transposed convolutions.

    Widths halve at each doubling from ``features * 2**(doublings - 1)`` at the
    seed to ``features`` before the output layer (Radford et al. 2015, fig. 1,
    scaled down by ``features``).
    """

    image_shape: tuple[int, int, int]
    features: int = 64
    norm: str = "batch"
    hidden: int = 0  # a fully connected layer before the projection; 0: none

    @nn.compact
    def __call__(self, z, train: bool = True):
        height, _, channels = self.image_shape
        side, doublings = seed_size(height)
        width = self.features * 2 ** (doublings - 1)
        h = z
        if self.hidden:
            h = nn.Dense(self.hidden, kernel_init=_DCGAN_INIT,
                         use_bias=self.norm != "batch", name="hidden")(h)
            h = nn.relu(_norm(self.norm, train)(h))
        h = nn.Dense(side * side * width, kernel_init=_DCGAN_INIT,
                     use_bias=self.norm != "batch")(h)
        h = h.reshape((z.shape[0], side, side, width))
        h = nn.relu(_norm(self.norm, train)(h))
        for i in range(doublings - 1):
            width //= 2
            h = UpConv(width, use_bias=self.norm != "batch", name=f"up{i}")(h)
            h = nn.relu(_norm(self.norm, train)(h))
        x = UpConv(channels, name="out")(h)
        return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
    """image -> logit: halving strided convolutions with leaky ReLU (0.2).

    ``norm``: ``batch`` (DCGAN: batch norm after every convolution but the
    first, and after the hidden dense layer), ``none``, or ``spectral``: each
    layer's weight divided by its largest singular value, estimated by one
    power iteration per training call (Miyato et al. 2018). The power
    iteration's vectors live in the ``batch_stats`` collection and move only
    when ``train``.
    """

    features: int = 64
    norm: str = "batch"
    hidden: int = 0  # a fully connected layer before the logit; 0: none
    # InfoGAN's Q head (Chen et al. 2016): logits of a categorical code of
    # this many classes from the layer before the logit; 0: none. With it the
    # call returns ``(logit [B], code logits [B, code_classes])``.
    code_classes: int = 0
    num_classes: int = 0  # > 0: class-conditional by projection (labels required)

    def _layer(self, layer, h, train: bool, name: str):
        if self.norm == "spectral":
            return nn.SpectralNorm(layer, name=f"{name}_spectral")(
                h, update_stats=train)
        return layer(h)

    @nn.compact
    def __call__(self, x, train: bool = True, labels=None):
        _, doublings = seed_size(x.shape[1])
        batch_norm = self.norm == "batch"
        h = x
        width = self.features
        for i in range(doublings):
            conv = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME",
                           kernel_init=_DCGAN_INIT,
                           use_bias=i == 0 or not batch_norm,
                           name=f"down{i}")
            h = self._layer(conv, h, train, f"down{i}")
            if i > 0 and batch_norm:  # None on the input layer (DCGAN, section 3).
                h = _norm("batch", train)(h)
            h = nn.leaky_relu(h, 0.2)
            width *= 2
        h = h.reshape((h.shape[0], -1))
        if self.hidden:
            dense = nn.Dense(self.hidden, kernel_init=_DCGAN_INIT,
                             use_bias=not batch_norm,
                             name="hidden")
            h = self._layer(dense, h, train, "hidden")
            if batch_norm:
                h = _norm("batch", train)(h)
            h = nn.leaky_relu(h, 0.2)
        logit = nn.Dense(1, kernel_init=_DCGAN_INIT, name="logit")
        out = project_labels(self._layer(logit, h, train, "logit")[:, 0], h, labels,
                             self.num_classes)
        if self.code_classes:
            return out, nn.Dense(self.code_classes, kernel_init=_DCGAN_INIT,
                                 name="code")(h)
        return out


def make_models(architecture: str, image_shape: tuple[int, int, int], *,
                g_hidden: Sequence[int] = (1200, 1200),
                d_hidden: Sequence[int] = (240, 240), maxout_pieces: int = 5,
                d_dropout: float = 0.5, d_input_dropout: float = 0.2,
                features: int = 64, d_features: int | None = None,
                g_norm: str = "batch", d_norm: str = "batch",
                dense_hidden: int = 0, code_classes: int = 0,
                num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)`` of ``architecture`` for ``image_shape``.

    ``features`` is the DCGAN generator's base width, and the discriminator's
    too unless ``d_features`` is given. ``dense_hidden`` > 0 adds a fully
    connected layer of that width before the generator's projection and
    before the discriminator's logit (the MNIST variant of Chen et al. 2016,
    InfoGAN, appendix C.1); ``code_classes`` > 0 gives the DCGAN
    discriminator InfoGAN's Q head for a categorical code; ``num_classes``
    > 0 makes the discriminator class-conditional by projection (the
    generator reads the label from its latent, see ``GANTask.latent``).
    """
    if architecture == "mlp":
        if code_classes:
            raise ValueError("a categorical code (InfoGAN's Q head) needs the "
                             "dcgan architecture")
        return (MLPGenerator(tuple(image_shape), tuple(g_hidden)),
                MLPDiscriminator(tuple(d_hidden), maxout_pieces,
                                 d_input_dropout, d_dropout, num_classes))
    if architecture == "dcgan":
        seed_size(image_shape[0])  # A clear error for an unreachable size.
        return (DCGANGenerator(tuple(image_shape), features, g_norm,
                               dense_hidden),
                DCGANDiscriminator(d_features or features, d_norm,
                                   dense_hidden, code_classes, num_classes))
    raise ValueError(f"architecture={architecture!r}; valid: {', '.join(ARCHITECTURES)}")
