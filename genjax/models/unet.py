"""Denoising networks of a DDPM (Linen modules only).

Two networks with one call signature, ``(x, t, label=None, *, train) ->
output shaped like x`` (the objective decides what the output means; for
Ho et al. 2020 it is the noise epsilon):

* ``UNet``: the U-Net of Ho et al. 2020 (appendix B), a PixelCNN++-like
  encoder-decoder (Salimans et al. 2017) built from wide residual blocks
  (Zagoruyko & Komodakis 2016) with group normalisation (Wu & He 2018), the
  timestep added to every residual block through a sinusoidal embedding
  (Vaswani et al. 2017), and single-head self-attention blocks at chosen
  resolutions (Ho et al.: 16x16 for 32x32 images). Every encoder block's
  output is concatenated into the decoder, which has one block more per
  level than the encoder (Ho et al.'s ``diffusion_utils/unet.py``).
* ``MLPDenoiser``: a small MLP for vectors (2-D toy data).

Both can be class-conditional (``num_classes > 0``): a learned class
embedding of ``num_classes + 1`` rows is added to the time embedding, the
last row being the "null" label that classifier-free guidance trains and
samples with (Ho & Salimans 2021); ``label=None`` means the null label for
every example.

Initialisation follows Ho et al.'s code: weights from
``variance_scaling(1, 'fan_avg', 'uniform')``, biases zero, and the last
layer of every residual branch (the second convolution of a residual block,
the attention's output projection) and the network's output layer set to
zero, so that each block starts as the identity and a fresh network outputs
exactly zero.

Layout, for speed on XLA:CPU: NHWC throughout; the attention's 1x1
projections are one ``[C, 3C]`` matmul on the flattened ``[B * HW, C]``
activations, and its two products are batched matmuls over ``[B, HW, C]``.

No losses, noise schedules, samplers or data here.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Ho et al.'s ``default_init``: Glorot-uniform-like, scale 1.
_DEFAULT_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
_ZERO_INIT = nn.initializers.zeros
# The sinusoidal features of the MLP's time embedding.
_MLP_TIME_DIM = 32


def timestep_embedding(t_B, dim: int, max_period: float = 10000.0):
    """Sinusoidal features of (float) timesteps: ``[B] -> [B, dim]``.

    Feature ``i < dim/2`` is ``sin(t * f_i)`` and feature ``dim/2 + i`` is
    ``cos(t * f_i)``, with frequencies ``f_i = max_period ** (-i / (dim/2))``
    from 1 down towards ``1 / max_period`` (Vaswani et al. 2017, section 3.5;
    Ho et al. 2020, appendix B). Ho et al.'s code divides by ``dim/2 - 1``
    instead of ``dim/2``, which spreads the same range a little differently.

    Args:
      t_B: ``[B]`` timesteps, any real values (DDPM passes step indices).
      dim: the number of features; must be even.
      max_period: the longest period, in units of t.

    Returns:
      ``[B, dim]`` float32.
    """
    if dim % 2 or dim <= 0:
        raise ValueError(f"timestep_embedding dim={dim} must be a positive even "
                         "number (half sines, half cosines)")
    half = dim // 2
    freqs_F = jnp.exp(-math.log(max_period)
                      * jnp.arange(half, dtype=jnp.float32) / half)
    args_BxF = jnp.asarray(t_B, jnp.float32)[:, None] * freqs_F[None, :]
    return jnp.concatenate([jnp.sin(args_BxF), jnp.cos(args_BxF)], axis=-1)


def group_count(channels: int, num_groups: int) -> int:
    """The number of group-norm groups for a layer of ``channels``.

    The largest divisor of ``channels`` that is at most ``num_groups``, so
    that any width works (Ho et al. use 32 groups on widths that are
    multiples of 32; e.g. 48 channels with ``num_groups=32`` get 24 groups).
    """
    return max(g for g in range(1, min(num_groups, channels) + 1)
               if channels % g == 0)


def _group_norm(channels: int, num_groups: int, name: str | None = None):
    # Flax's epsilon 1e-6 is also TensorFlow's group-norm default, which Ho
    # et al. used.
    return nn.GroupNorm(num_groups=group_count(channels, num_groups),
                        epsilon=1e-6, name=name)


def _conv3x3(features: int, *, strides: int = 1, zero: bool = False,
             name: str | None = None) -> nn.Conv:
    # Symmetric padding of 1: stride 1 keeps the side, stride 2 halves an
    # even side exactly.
    return nn.Conv(features, (3, 3), strides=(strides, strides),
                   padding=((1, 1), (1, 1)),
                   kernel_init=_ZERO_INIT if zero else _DEFAULT_INIT,
                   name=name)


def _check_labels(label_B, num_classes: int, batch: int):
    """``[B]`` int32 labels, the null label ``num_classes`` where ``None``."""
    if num_classes <= 0:
        if label_B is not None:
            raise ValueError("labels were passed to an unconditional denoiser "
                             "(num_classes=0); set num_classes to the number "
                             "of classes or pass label=None")
        return None
    if label_B is None:
        return jnp.full((batch,), num_classes, jnp.int32)
    label_B = jnp.asarray(label_B)
    if label_B.shape != (batch,):
        raise ValueError(f"label must be [batch]=({batch},), got shape "
                         f"{label_B.shape}")
    return label_B.astype(jnp.int32)


class ResBlock(nn.Module):
    """A residual block with a timestep (and class) embedding.

    ``GroupNorm -> swish -> conv3x3 -> + Dense(swish(emb)) -> GroupNorm ->
    swish -> dropout -> conv3x3`` plus the input, through a 1x1 convolution
    when the width changes (Ho et al. 2020, appendix B; their code applies
    the swish to the embedding before each block's projection). The second
    convolution starts at zero, so the block starts as its skip path.
    """

    features: int
    num_groups: int = 32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x_BxHxWxC, emb_BxE, train: bool):
        h = nn.swish(_group_norm(x_BxHxWxC.shape[-1], self.num_groups,
                                 name="norm1")(x_BxHxWxC))
        h = _conv3x3(self.features, name="conv1")(h)
        emb_BxF = nn.Dense(self.features, kernel_init=_DEFAULT_INIT,
                           name="emb_proj")(nn.swish(emb_BxE))
        h = h + emb_BxF[:, None, None, :]
        h = nn.swish(_group_norm(self.features, self.num_groups, name="norm2")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv3x3(self.features, zero=True, name="conv2")(h)
        skip = x_BxHxWxC
        if x_BxHxWxC.shape[-1] != self.features:
            skip = nn.Conv(self.features, (1, 1), kernel_init=_DEFAULT_INIT,
                           name="skip")(skip)
        return skip + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, plus the input.

    ``GroupNorm -> q, k, v (1x1) -> softmax(q k^T / sqrt(C)) v -> 1x1`` (Ho
    et al. 2020, appendix B; the non-local block of Wang et al. 2018). The
    output projection starts at zero, so the block starts as the identity.
    The three 1x1 projections are one ``[C, 3C]`` matmul.
    """

    num_groups: int = 32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        batch, height, width, channels = x_BxHxWxC.shape
        positions = height * width
        h = _group_norm(channels, self.num_groups, name="norm")(x_BxHxWxC)
        # A 1x1 convolution is a dense layer on the flattened positions;
        # XLA:CPU runs its gradient faster on a 2-D operand.
        qkv = nn.Dense(3 * channels, kernel_init=_DEFAULT_INIT, name="qkv")(
            h.reshape(batch * positions, channels))
        q_BxPxC, k_BxPxC, v_BxPxC = jnp.split(
            qkv.reshape(batch, positions, 3 * channels), 3, axis=-1)
        scores_BxPxP = jnp.einsum("bpc,bqc->bpq", q_BxPxC, k_BxPxC) / math.sqrt(
            channels)
        weights_BxPxP = jax.nn.softmax(scores_BxPxP, axis=-1)
        out_BxPxC = jnp.einsum("bpq,bqc->bpc", weights_BxPxP, v_BxPxC)
        out = nn.Dense(channels, kernel_init=_ZERO_INIT, name="proj_out")(
            out_BxPxC.reshape(batch * positions, channels))
        return x_BxHxWxC + out.reshape(batch, height, width, channels)


def upsample_nearest(x_BxHxWxC):
    """Nearest-neighbour 2x upsampling: ``[B, H, W, C] -> [B, 2H, 2W, C]``.

    A broadcast and a reshape, whose gradient is a sum over each 2x2 block.
    """
    batch, height, width, channels = x_BxHxWxC.shape
    y = jnp.broadcast_to(x_BxHxWxC[:, :, None, :, None, :],
                         (batch, height, 2, width, 2, channels))
    return y.reshape(batch, 2 * height, 2 * width, channels)


class UNet(nn.Module):
    """The DDPM U-Net (Ho et al. 2020, appendix B): ``(x, t, label) -> [B, H, W, out]``.

    Levels run at sides ``S, S/2, ..., S / 2**(L-1)`` for ``L =
    len(channel_mults)`` with width ``channels * channel_mults[level]``. The
    encoder is a 3x3 convolution, then per level ``num_res_blocks`` residual
    blocks (each followed by self-attention if the level's side is in
    ``attention_resolutions``) and, on every level but the last, a stride-2
    3x3 convolution. The middle is residual block, attention, residual
    block. The decoder mirrors the levels with ``num_res_blocks + 1`` blocks
    each, every one taking the concatenation of the previous output and one
    stored encoder output (the first convolution's, each block's and each
    downsampling's, last first), and upsamples with nearest-neighbour 2x and
    a 3x3 convolution. The output is ``GroupNorm -> swish -> conv3x3``.

    Ho et al.'s CIFAR-10 network is ``channels=128, channel_mults=(1, 2, 2,
    2), num_res_blocks=2, attention_resolutions=(16,), dropout=0.1``.

    Dropout needs an ``rngs={'dropout': key}`` argument when ``train``.
    """

    channels: int = 64
    channel_mults: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    # Feature-map sides (pixels) with self-attention after each residual
    # block; the middle block always has one.
    attention_resolutions: Sequence[int] = (14,)
    dropout: float = 0.1
    # 0: unconditional; K > 0: K classes and the null label K.
    num_classes: int = 0
    num_groups: int = 32
    out_channels: int | None = None  # None: the input's channels
    # Recompute each residual and attention block's activations in the
    # backward pass (flax.linen.remat) instead of storing them: less memory
    # for one more forward pass of each block, the same numbers.
    remat: bool = False
    # The computation dtype (None: the input's): the input and the time
    # embedding are cast to it, so that with parameters cast alike (mixed
    # precision, genjax.train.step.mixed_precision) every layer computes in
    # it; the output is float32.
    dtype: Any = None

    def _check_side(self, height: int, width: int) -> None:
        halvings = len(self.channel_mults) - 1
        factor = 2 ** halvings
        for side in (height, width):
            if side % factor:
                raise ValueError(
                    f"image side {side} cannot be halved {halvings} times exactly "
                    f"(channel_mults={tuple(self.channel_mults)} has "
                    f"{len(self.channel_mults)} levels); use a side divisible by "
                    f"{factor} or fewer channel_mults")

    @nn.compact
    def __call__(self, x_BxHxWxC, t_B, label_B=None, latent_BxZ=None, *,
                 train: bool):
        """The denoiser's output for noisy images at timesteps.

        Args:
          x_BxHxWxC: ``[B, H, W, C]`` noisy images; ``H`` and ``W`` divisible
            by ``2 ** (len(channel_mults) - 1)``.
          t_B: ``[B]`` float timesteps (DDPM: step indices in ``[0, T)``).
          label_B: ``[B]`` int class labels in ``[0, num_classes]`` (the last
            being the null label), or None: the null label for all (needs
            ``num_classes > 0`` to be anything but None).
          latent_BxZ: ``[B, Z]`` latent noise, or None: a generator's
            latent (the denoising diffusion GAN's ``z``), mapped by a
            two-layer MLP and added to the time embedding.
          train: dropout on (needs the ``dropout`` rng stream) or off.

        Returns:
          ``[B, H, W, out_channels or C]``.
        """
        if not self.channel_mults:
            raise ValueError("channel_mults is empty; give one multiplier per "
                             "resolution level, e.g. (1, 2, 2)")
        batch, height, width, in_channels = x_BxHxWxC.shape
        self._check_side(height, width)
        t_B = jnp.asarray(t_B)
        if t_B.shape != (batch,):
            raise ValueError(f"t must be [batch]=({batch},), got shape {t_B.shape}")
        label_B = _check_labels(label_B, self.num_classes, batch)
        attention_sides = set(self.attention_resolutions)

        # Time (and class) embedding, shared by every residual block.
        emb_dim = 4 * self.channels
        emb = timestep_embedding(t_B, self.channels)
        if self.dtype is not None:
            x_BxHxWxC, emb = x_BxHxWxC.astype(self.dtype), emb.astype(self.dtype)
            if latent_BxZ is not None:
                latent_BxZ = latent_BxZ.astype(self.dtype)
        emb = nn.Dense(emb_dim, kernel_init=_DEFAULT_INIT, name="temb_dense0")(emb)
        emb = nn.Dense(emb_dim, kernel_init=_DEFAULT_INIT,
                       name="temb_dense1")(nn.swish(emb))
        if label_B is not None:
            emb = emb + nn.Embed(self.num_classes + 1, emb_dim,
                                 name="class_embed")(label_B)
        if latent_BxZ is not None:
            z = nn.Dense(emb_dim, kernel_init=_DEFAULT_INIT, name="latent_dense0")(
                latent_BxZ)
            emb = emb + nn.Dense(emb_dim, kernel_init=_DEFAULT_INIT,
                                 name="latent_dense1")(nn.swish(z))

        res_cls, attn_cls = ResBlock, AttentionBlock
        if self.remat:  # ResBlock's ``train`` (argument 3, self being 0) is static.
            res_cls, attn_cls = nn.remat(ResBlock, static_argnums=(3,)), nn.remat(AttentionBlock)

        def res_block(h, features, name):
            return res_cls(features, self.num_groups, self.dropout, name=name)(
                h, emb, train)

        def attention(h, name):
            return attn_cls(self.num_groups, name=name)(h)

        # Encoder: every output is kept for the decoder's skip connections.
        h = _conv3x3(self.channels, name="conv_in")(x_BxHxWxC)
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for block in range(self.num_res_blocks):
                h = res_block(h, self.channels * mult, f"down{level}_res{block}")
                if h.shape[1] in attention_sides:
                    h = attention(h, f"down{level}_attn{block}")
                skips.append(h)
            if level != len(self.channel_mults) - 1:
                h = _conv3x3(h.shape[-1], strides=2, name=f"down{level}_downsample")(h)
                skips.append(h)

        # Middle.
        h = res_block(h, h.shape[-1], "mid_res0")
        h = attention(h, "mid_attn")
        h = res_block(h, h.shape[-1], "mid_res1")

        # Decoder: one block more per level, to take the downsampling's (or,
        # at the top, the first convolution's) output too.
        for level in reversed(range(len(self.channel_mults))):
            features = self.channels * self.channel_mults[level]
            for block in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = res_block(h, features, f"up{level}_res{block}")
                if h.shape[1] in attention_sides:
                    h = attention(h, f"up{level}_attn{block}")
            if level != 0:
                h = _conv3x3(features, name=f"up{level}_upsample")(upsample_nearest(h))
        assert not skips, "every encoder output feeds the decoder once"

        h = nn.swish(_group_norm(h.shape[-1], self.num_groups, name="norm_out")(h))
        out = _conv3x3(self.out_channels or in_channels, zero=True, name="conv_out")(h)
        return out if self.dtype is None else out.astype(jnp.float32)


class MLPDenoiser(nn.Module):
    """A denoiser for vectors (2-D toy data): ``(x, t, label) -> [B, D]``.

    The input is ``x`` concatenated with a sinusoidal time embedding
    (``timestep_embedding``, 32 features); ``num_layers`` dense layers of
    ``hidden`` units with swish follow, each adding its own projection of the
    time (and class) embedding before the nonlinearity, as the U-Net's
    residual blocks do. The output layer starts at zero. ``train`` is
    accepted for the common signature; there is no dropout.
    """

    hidden: int = 128
    num_layers: int = 3
    # 0: unconditional; K > 0: K classes and the null label K.
    num_classes: int = 0
    dtype: Any = None  # the computation dtype, as UNet's

    @nn.compact
    def __call__(self, x_BxD, t_B, label_B=None, *, train: bool):
        """The denoiser's output for noisy vectors ``[B, D]`` at timesteps ``[B]``.

        ``label_B`` is as for ``UNet``: ``[B]`` ints in ``[0, num_classes]``
        or None (the null label).
        """
        del train  # No dropout.
        batch, dim = x_BxD.shape
        t_B = jnp.asarray(t_B)
        if t_B.shape != (batch,):
            raise ValueError(f"t must be [batch]=({batch},), got shape {t_B.shape}")
        label_B = _check_labels(label_B, self.num_classes, batch)
        features = timestep_embedding(t_B, _MLP_TIME_DIM)
        if self.dtype is not None:
            x_BxD, features = x_BxD.astype(self.dtype), features.astype(self.dtype)
        emb = nn.swish(nn.Dense(self.hidden, kernel_init=_DEFAULT_INIT,
                                name="temb_dense")(features))
        if label_B is not None:
            emb = emb + nn.Embed(self.num_classes + 1, self.hidden,
                                 name="class_embed")(label_B)
        h = jnp.concatenate([x_BxD, features], axis=-1)
        for i in range(self.num_layers):
            h = nn.Dense(self.hidden, kernel_init=_DEFAULT_INIT, name=f"dense{i}")(h)
            h = nn.swish(h + nn.Dense(self.hidden, kernel_init=_DEFAULT_INIT,
                                      name=f"emb_proj{i}")(emb))
        out = nn.Dense(dim, kernel_init=_ZERO_INIT, name="out")(h)
        return out if self.dtype is None else out.astype(jnp.float32)
