"""The denoising diffusion GAN task (Xiao, Kreis & Vahdat 2022): a GAN per
denoising step of a T-step diffusion, trained with the GAN task's two-player
update, sampled in T network calls.

Each training step draws a step index ``i`` per example and a real pair
``(x_i, x_{i+1})`` from the forward process; the generator (the diffusion
task's U-Net with a latent input) turns ``x_{i+1}`` and a latent into a clean
image ``x_0'``, and ``x_i'`` is drawn from ``q(x_i | x_{i+1}, x_0')``. The
discriminator ``D(x_i, x_{i+1}, i)`` is trained on real against generated
pairs with the configured adversarial loss and an R1 penalty on the real
``x_i``. Evaluation reports ``D`` on real and generated pairs of the test
split and the shared sample-quality metrics of T-call sampling (with its
``nfe``); the figure shows the T denoising steps of a few samples.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax.config import ConfigError
from genjax.models import ddgan as ddgan_models
from genjax.models import unet as unet_lib
from genjax.objectives import adversarial
from genjax.objectives import ddgan as ddgan_obj
from genjax.objectives import diffusion as diff
from genjax.tasks import diffusion as diffusion_task
from genjax.tasks import gan
from genjax.train import step as step_lib


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every denoising-diffusion-GAN experiment (Xiao et
    al.'s CIFAR-10 choices where they carry over)."""
    config = gan.base_config(data_name)
    m = config.model = ml_collections.ConfigDict()
    # The generator: the diffusion task's U-Net with a latent input.
    m.channels = 32
    m.channel_mults = (1, 2, 2)
    m.num_res_blocks = 1
    m.attention_resolutions = ()
    m.dropout = 0.0
    m.num_groups = 8
    m.remat = False  # recompute each generator block in the backward pass
    m.latents = 100
    # Both networks given the class label (the generator through the U-Net's
    # class embedding, the discriminator by projection); samples draw labels
    # uniformly. Ignored, with a warning, on a dataset without labels.
    m.class_conditional = False
    # The discriminator: base width and downsampling levels.
    m.d_features = 32
    m.d_levels = 2
    # The discriminator's minibatch standard deviation over groups of this
    # many (0: off; Xiao et al.'s discriminator has it too): without it, 500
    # steps at the cpu preset's learning rates still drew one blurred mean
    # digit whatever the generator's input.
    m.d_minibatch_std = 4
    d = config.ddgan = ml_collections.ConfigDict()
    d.num_steps = 4  # T, the generator's calls per sample
    d.beta_min, d.beta_max = 0.1, 20.0  # the VP schedule's discretisation
    # Weight of an auxiliary squared error of the generator's clean image
    # against the real x_0 behind its input, added to its adversarial loss
    # (0: Xiao et al.'s pure adversarial objective).
    d.recon_weight = 0.0
    # The R1 penalty on every k-th real pair of the batch only (1: all): an
    # unbiased estimate of the same penalty at 1/k of its cost.
    d.r1_subsample = 1
    g = config.gan
    g.r1_gamma = 0.02
    g.loss = "non_saturating"
    t = config.train
    t.learning_rate = 1.6e-4  # the generator's
    g.d_learning_rate = 1.25e-4
    t.b1, t.b2 = 0.5, 0.9
    t.ema_decay = 0.999
    return config


class DDGANTask(gan.TwoPlayerTask):
    """The denoising diffusion GAN on images."""

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        if dataset_info.kind != "image":
            raise ConfigError(
                f"the denoising diffusion GAN needs an image dataset; data.name="
                f"{config.data.name!r} is of kind {dataset_info.kind!r}")
        m, d = config.model, config.ddgan
        if d.num_steps < 1:
            raise ConfigError(f"ddgan.num_steps={d.num_steps} must be at least 1")
        if not 0.0 < d.beta_min < d.beta_max:
            raise ConfigError(f"ddgan.beta_min={d.beta_min}, beta_max={d.beta_max}: "
                              "need 0 < beta_min < beta_max")
        if d.recon_weight < 0:
            raise ConfigError(f"ddgan.recon_weight={d.recon_weight} must be >= 0")
        if d.r1_subsample < 1:
            raise ConfigError(f"ddgan.r1_subsample={d.r1_subsample} must be at least 1 "
                              "(1: the penalty on every real pair)")
        if m.latents < 1:
            raise ConfigError(f"model.latents={m.latents} must be at least 1")
        self.image_shape = tuple(dataset_info.element_spec["image"])
        self.num_classes = 0
        if m.class_conditional and not diffusion_task.has_labels(dataset_info):
            logging.getLogger("genjax").warning(
                "data.name=%r has no labels: model.class_conditional=True ignored; "
                "the denoising diffusion GAN is trained unconditionally",
                config.data.name)
        elif m.class_conditional:
            self.num_classes = int(dataset_info.num_classes)
        self.schedule = diff.make_schedule("vp", d.num_steps, d.beta_min, d.beta_max)
        self.generator = unet_lib.UNet(
            channels=m.channels, channel_mults=tuple(m.channel_mults),
            num_res_blocks=m.num_res_blocks,
            attention_resolutions=tuple(m.attention_resolutions), dropout=m.dropout,
            num_groups=m.num_groups, num_classes=self.num_classes, remat=m.remat)
        if m.d_minibatch_std < 0:
            raise ConfigError(f"model.d_minibatch_std={m.d_minibatch_std} must be >= 0 "
                              "(0: off)")
        self.discriminator = ddgan_models.PairDiscriminator(
            m.d_features, m.d_levels, minibatch_std=m.d_minibatch_std,
            num_classes=self.num_classes)
        try:  # A side the levels cannot halve is a config problem.
            jax.eval_shape(lambda: self.generator.init(
                jax.random.key(0), jnp.zeros((1,) + self.image_shape), jnp.zeros((1,)),
                self._labels_or_none(jnp.zeros((1,), jnp.int32)),
                jnp.zeros((1, m.latents)), train=False))
        except ValueError as e:
            raise ConfigError(f"data.name={config.data.name!r}: {e}") from None

    # ------------------------------------------------------------------
    # The two networks.

    def latent(self, rng, num: int):
        return jax.random.normal(rng, (num, self.config.model.latents))

    def _labels_or_none(self, labels):
        return labels if self.num_classes else None

    def generator_fn(self, g_params, labels=None):
        """``(x_next, i, key) -> x_0'`` in [-1, 1] (for ``labels [B]`` where
        class-conditional)."""
        # Computes in its parameters' dtype (bfloat16 under mixed precision).
        generator = self.generator.clone(dtype=step_lib.params_dtype(g_params))

        def fn(x_next, i, key):
            z = self.latent(key, x_next.shape[0])
            out = generator.apply({"params": g_params}, x_next,
                                  self.embed_step(i), labels, z, train=False)
            return jnp.tanh(out)
        return fn

    def embed_step(self, i):
        """Step ``i`` in ``0 .. T-1`` as the networks' time input: spread over
        ``[0, 1000)`` like the diffusion models' steps, so the sinusoidal
        embedding (periods 1 to 10,000) tells the T steps apart; as raw
        indices 0 .. 3 they differ only in its fastest few frequencies."""
        return (i.astype(jnp.float32) + 0.5) * (1000.0 / self.schedule.num_steps)

    def d_logits(self, d_params, x_prev, x_next, i, labels=None):
        dtype = step_lib.params_dtype(d_params)  # bfloat16 under mixed precision
        return self.discriminator.apply({"params": d_params}, x_prev.astype(dtype),
                                        x_next.astype(dtype), self.embed_step(i), labels)

    def init_params(self, rng, example_batch):
        g_rng, d_rng = jax.random.split(rng)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        t = jnp.zeros((1,), jnp.float32)
        y = self._labels_or_none(jnp.zeros((1,), jnp.int32))
        g_vars = self.generator.init(g_rng, x, t, y,
                                     jnp.zeros((1, self.config.model.latents)),
                                     train=False)
        d_vars = self.discriminator.init(d_rng, x, x, t, y)
        return {"generator": dict(g_vars), "discriminator": dict(d_vars)}

    # ------------------------------------------------------------------
    # The two players' losses.

    def _pairs(self, g_params, batch, rng):
        """Real and generated pairs for one batch: ``(x_prev, x_next,
        fake_prev, i, labels)`` (labels None where unconditional), and the
        real and generated clean images ``(x0, x0')``."""
        i_rng, real_rng, fake_rng = jax.random.split(rng, 3)
        x0 = batch["image"] * 2.0 - 1.0
        i = jax.random.randint(i_rng, (x0.shape[0],), 0, self.schedule.num_steps)
        labels = self._labels_or_none(batch.get("label"))
        x_prev, x_next = ddgan_obj.real_pair(self.schedule, x0, i, real_rng)
        fake_prev, x0_pred = ddgan_obj.fake_pair(self.generator_fn(g_params, labels),
                                                 self.schedule, x_next, i, fake_rng)
        return (x_prev, x_next, fake_prev, i, labels), (x0, x0_pred)

    def d_loss_fn(self, d_params, g_params, model_state, batch, rng):
        (x_prev, x_next, fake_prev, i, y), _ = self._pairs(g_params, batch, rng)
        fake_prev = jax.lax.stop_gradient(fake_prev)
        real_logits = self.d_logits(d_params, x_prev, x_next, i, y)
        fake_logits = self.d_logits(d_params, fake_prev, x_next, i, y)
        loss, metrics = adversarial.discriminator_loss(self.config.gan.loss,
                                                       real_logits, fake_logits)
        gamma = self.config.gan.r1_gamma
        if gamma > 0:
            k = self.config.ddgan.r1_subsample
            sub_y = None if y is None else y[::k]
            r1 = adversarial.r1_penalty(
                lambda x: self.d_logits(d_params, x, x_next[::k], i[::k], sub_y),
                x_prev[::k])
            loss = loss + 0.5 * gamma * r1
            metrics["r1"] = r1
        return loss, (metrics, model_state)

    def g_loss_fn(self, g_params, d_params, model_state, batch, rng):
        (_, x_next, fake_prev, i, y), (x0, x0_pred) = self._pairs(g_params, batch, rng)
        logits = self.d_logits(d_params, fake_prev, x_next, i, y)
        loss, metrics = adversarial.generator_loss(self.config.gan.loss, logits)
        weight = self.config.ddgan.recon_weight
        if weight:
            recon = jnp.mean(jnp.square(x0_pred - x0))
            loss = loss + weight * recon
            metrics["recon"] = recon
        return loss, (metrics, model_state)

    # ------------------------------------------------------------------
    # Evaluation and sampling.

    def eval_fn(self, params, batch, rng, *, final):
        """``D`` on a real and a generated pair of each test image (a random
        step), in inference mode."""
        del final
        (x_prev, x_next, fake_prev, i, y), _ = self._pairs(params["generator"], batch, rng)
        d = params["discriminator"]
        return {"d_real": jax.nn.sigmoid(self.d_logits(d, x_prev, x_next, i, y)),
                "d_fake": jax.nn.sigmoid(self.d_logits(d, fake_prev, x_next, i, y))}

    def sample(self, params, rng, num_samples: int, *, labels=None,
               keep_path: bool = False):
        """``num_samples`` images in [0, 1] from T generator calls (and with
        ``keep_path`` each step's images, ``[T, N, H, W, C]``). A
        class-conditional model draws labels uniformly unless ``labels``
        ``[num_samples]`` are given."""
        start_rng, label_rng, rng = jax.random.split(rng, 3)
        x_T = step_lib.shard_batch_axis(
            jax.random.normal(start_rng, (num_samples,) + self.image_shape))
        if self.num_classes and labels is None:
            labels = step_lib.shard_batch_axis(jax.random.randint(
                label_rng, (num_samples,), 0, self.num_classes))
        out = ddgan_obj.sample(
            self.generator_fn(params["generator"], self._labels_or_none(labels)),
            self.schedule, x_T, rng, keep_path=keep_path)
        if keep_path:
            return (out[0] + 1.0) * 0.5, (jnp.clip(out[1], -1.0, 1.0) + 1.0) * 0.5
        return (out + 1.0) * 0.5

    def sample_fn(self, params, rng, num_samples):
        return self.sample(params, rng, num_samples)

    def sample_quality_samplers(self, final):
        del final
        t = self.schedule.num_steps

        def with_nfe(p, r, n):
            return self.sample(p, r, n), {"nfe": jnp.full((n,), t, jnp.float32)}
        return {"": with_nfe}

    def figures(self, params, batch, rng):
        """The T denoising steps of 8 samples, one row each."""
        del batch
        _, path = self.sample(params, rng, 8, keep_path=True)
        steps = np.asarray(path).transpose(1, 0, 2, 3, 4)  # [N, T, H, W, C]
        return {"denoising": (steps.reshape((-1,) + steps.shape[2:]), steps.shape[1])}
