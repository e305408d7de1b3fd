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
    anti-aliased downsampling)."""

    features: int = 32
    num_levels: int = 2

    @nn.compact
    def __call__(self, x_prev, x_next, t_B):
        act = lambda h: nn.leaky_relu(h, 0.2)  # noqa: E731
        emb = timestep_embedding(jnp.asarray(t_B, jnp.float32), self.features)
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
        h = act(h).reshape(h.shape[0], -1)
        return nn.Dense(1, name="logit")(h)[:, 0]
