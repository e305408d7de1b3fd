"""The denoising diffusion GAN's networks (Xiao et al. 2022).

The generator is the diffusion task's U-Net (``genjax.models.unet.UNet``)
given the latent ``z`` beside the time step, its output squashed to [-1, 1]
by tanh: a clean image ``x_0'`` for ``x_t``. The discriminator below judges
a pair of consecutive steps ``(x_{t-1}, x_t)`` at step ``t``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from genjax.models.unet import timestep_embedding


class PairDiscriminator(nn.Module):
    """``D(x_{t-1}, x_t, t) -> logits [B]``: the two images stacked on the
    channel axis, a 3x3 convolution, then per level two 3x3 convolutions
    (LeakyReLU 0.2, the step's embedding added after the first) and a
    stride-2 one, then a dense logit over the flattened features (the
    time-conditioned discriminator of Xiao et al., without their
    anti-aliased downsampling).

    With ``minibatch_std`` > 0, the standard deviation of the last features
    across groups of that many examples is appended as one more feature map
    before the logit (the minibatch standard deviation of Karras et al.
    2018): a generator that draws the same image whatever its input is
    caught by it.

    With ``num_classes`` > 0 it is class-conditional by projection (Miyato &
    Koyama 2018): the logit gains the inner product of the flattened
    features with a learned embedding of the label ``label_B [B]``."""

    features: int = 32
    num_levels: int = 2
    minibatch_std: int = 0
    num_classes: int = 0

    @nn.compact
    def __call__(self, x_prev, x_next, t_B, label_B=None):
        act = lambda h: nn.leaky_relu(h, 0.2)  # noqa: E731
        # In the images' dtype (bfloat16 under mixed precision), like the rest.
        emb = timestep_embedding(jnp.asarray(t_B, jnp.float32), self.features).astype(
            x_prev.dtype)
        emb = act(nn.Dense(4 * self.features, name="temb")(emb))
        h = nn.Conv(self.features, (3, 3), padding="SAME", name="conv_in")(
            jnp.concatenate([x_prev, x_next], axis=-1))
        for level in range(self.num_levels):
            width = self.features * 2 ** level
            h = nn.Conv(width, (3, 3), padding="SAME", name=f"conv{level}_a")(act(h))
            h = h + nn.Dense(width, name=f"temb{level}")(emb)[:, None, None, :]
            h = nn.Conv(width, (3, 3), padding="SAME", name=f"conv{level}_b")(act(h))
            h = nn.Conv(2 * width, (3, 3), strides=(2, 2), padding="SAME",
                        name=f"conv{level}_down")(act(h))
        h = act(h)
        if self.minibatch_std:
            h = jnp.concatenate([h, minibatch_stddev(h, self.minibatch_std)], axis=-1)
        h = h.reshape(h.shape[0], -1)
        logit = nn.Dense(1, name="logit")(h)[:, 0]
        if self.num_classes:
            if label_B is None:
                raise ValueError("a class-conditional discriminator "
                                 f"(num_classes={self.num_classes}) needs labels")
            embed = nn.Embed(self.num_classes, h.shape[-1], name="class_embed",
                             embedding_init=nn.initializers.normal(0.02))
            logit = logit + jnp.sum(embed(label_B) * h, axis=-1)
        elif label_B is not None:
            raise ValueError("labels were passed to an unconditional discriminator "
                             "(num_classes=0)")
        return logit


def minibatch_stddev(h_BxHxWxC, group_size: int):
    """``[B, H, W, 1]``: for each example, the standard deviation of the
    features across its group (consecutive examples, ``group_size`` of them
    or the largest divisor of ``B`` below that), averaged over features and
    positions."""
    b = h_BxHxWxC.shape[0]
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    grouped = h_BxHxWxC.reshape((b // g, g) + h_BxHxWxC.shape[1:])
    std = jnp.sqrt(jnp.var(grouped, axis=1) + 1e-8)  # [B/g, H, W, C]
    std = jnp.repeat(jnp.mean(std, axis=(1, 2, 3)), g)  # [B], its group's value
    return jnp.broadcast_to(std[:, None, None, None], h_BxHxWxC.shape[:3] + (1,))
