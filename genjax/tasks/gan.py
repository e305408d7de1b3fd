"""The GAN task: generator and discriminator, adversarial losses, two players.

Training is ``genjax.train.two_player``'s update with this task's losses;
evaluation is the discriminator's view of the test split plus the shared
sample-quality metrics (``genjax.evaluate.sample_quality``) configured in
``config.eval.sample_quality``. Instability is reported, not hidden: both
losses, ``D(x)``, ``D(G(z))`` and both players' gradient norms are logged,
and a discriminator that wins outright for ``gan.d_wins_patience``
consecutive steps stops the run with a message naming the step.

With ``model.code_classes`` > 0 the GAN is an InfoGAN (Chen et al. 2016):
the generator's latent ends in a uniformly drawn one-hot code, the
discriminator has a second head Q(c | x), and ``gan.info_weight`` times Q's
cross-entropy on generated images is added to both players' losses. No
labels are used; the code is free to capture whatever discrete factor helps,
on MNIST mostly the digit class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import config_dict

from genjax import config as config_lib
from genjax.config import ConfigError, check_choice
from genjax.evaluate import sample_quality
from genjax.models import gan as gan_models
from genjax.objectives import adversarial, diffaugment
from genjax.tasks.base import Task, conditional_classes
from genjax.train import step as step_lib
from genjax.train import two_player
from genjax.train.state import build_optimizer

LATENT_DISTS = ("uniform", "normal")


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every GAN experiment, with DCGAN's defaults."""
    config = config_lib.base_config(data_name=data_name)
    m = config.model = ml_collections.ConfigDict()
    m.architecture = "dcgan"  # mlp | dcgan
    m.latents = 100
    m.latent_dist = "uniform"  # uniform in [-1, 1] (both papers) | normal
    # dcgan: base width (the widest layer has features * 2**(doublings-1)).
    m.features = 64
    # dcgan: the discriminator's base width; None: the same as features.
    m.d_features = config_dict.placeholder(int)
    # dcgan: width of a fully connected layer before G's projection and D's
    # logit (InfoGAN's MNIST networks, Chen et al. 2016); 0: none (Radford).
    m.dense_hidden = 0
    m.g_norm = "batch"  # batch | none
    m.d_norm = "batch"  # batch | none | spectral (Miyato et al. 2018)
    # dcgan: classes of InfoGAN's categorical code (Chen et al. 2016): G gets
    # a uniform one-hot code beside the noise and D a head Q(c | x); 0: none.
    m.code_classes = 0
    # A class-conditional GAN (Mirza & Osindero 2014): G gets the one-hot
    # label beside the noise, D reads it by projection (Miyato & Koyama
    # 2018); fakes take the real batch's labels, samples uniform ones.
    m.class_conditional = False
    # mlp (Goodfellow et al. 2014): ReLU generator, maxout discriminator.
    m.g_hidden = (1200, 1200)
    m.d_hidden = (240, 240)
    m.maxout_pieces = 5
    m.d_dropout = 0.5
    m.d_input_dropout = 0.2

    g = config.gan = ml_collections.ConfigDict()
    g.loss = "non_saturating"  # minimax | non_saturating | hinge
    g.n_disc = 1  # discriminator steps per generator step
    g.r1_gamma = 0.0  # R1 penalty weight on real data; 0 disables
    # DiffAugment (Zhao et al. 2020) for training on a few hundred images:
    # transformations applied to every image D sees in training, real and
    # generated, comma-separated from color, translation, cutout; "": none.
    g.diff_augment = ""
    # Mode seeking (Mao et al. 2019, MSGAN) against a conditional generator's
    # collapse: this weight times 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|)
    # for two latents of the same labels joins G's loss; 0 disables.
    g.mode_seeking = 0.0
    # InfoGAN's lambda: weight of the code's cross-entropy in both players'
    # losses (used when model.code_classes > 0).
    g.info_weight = 1.0
    # The discriminator's learning rate; None: the same as train.learning_rate.
    g.d_learning_rate = config_dict.placeholder(float)
    # "Wins outright": D(x) > threshold and D(G(z)) < 1 - threshold.
    g.d_wins_threshold = 0.99
    g.d_wins_patience = 2000  # consecutive steps before stopping; 0: never

    # Adam with lr 2e-4 and beta1 = 0.5 (Radford et al. 2015, section 4).
    config.train.optimizer = "adam"
    config.train.learning_rate = 2e-4
    config.train.b1 = 0.5
    config.train.b2 = 0.999
    config.train.ema_decay = 0.999  # of the generator; 0 disables
    config.eval.use_ema = True
    config.eval.sample_quality = sample_quality.default_protocol()
    return config


def smoke_preset(config: ml_collections.ConfigDict) -> None:
    """The ``smoke`` preset of every GAN experiment: tiny models, 20 steps that
    log, evaluate, sample and checkpoint, and 200 samples judged."""
    m = config.model
    m.features, m.latents = 8, 16
    m.g_hidden, m.d_hidden, m.maxout_pieces = (64,), (32,), 2
    config.train.batch_size = 32
    config_lib.smoke_schedule(config)
    q = config.eval.sample_quality
    q.num_samples, q.num_samples_during_training, q.kid_subset_size = 200, 100, 100


class TwoPlayerTask(Task):
    """What every task trained by ``two_player.two_player_update`` shares:
    the two optimisers (the discriminator's at ``gan.d_learning_rate``), the
    train state with the generator's EMA, the update, the parameters
    evaluation sees and the check that the discriminator has not won
    outright. A subclass defines ``init_params`` (``{'generator':
    variables, 'discriminator': variables}``), ``d_loss_fn`` and
    ``g_loss_fn``."""

    progress_keys = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        g = config.gan
        check_choice("gan.loss", g.loss, adversarial.LOSSES)
        if g.n_disc < 1:
            raise ConfigError(f"gan.n_disc={g.n_disc} must be at least 1")
        if g.r1_gamma < 0:
            raise ConfigError(f"gan.r1_gamma={g.r1_gamma} must be >= 0")
        if g.get("mode_seeking", 0.0) < 0:
            raise ConfigError(f"gan.mode_seeking={g.mode_seeking} must be >= 0 (0: off)")
        try:
            self.diff_augment = diffaugment.parse_policy(g.get("diff_augment", ""))
        except ValueError as e:
            raise ConfigError(f"gan.diff_augment={g.diff_augment!r}: {e}") from None

    def augmented(self, x, rng, which: int):
        """``x`` through ``gan.diff_augment`` (itself when that is empty);
        ``which`` tells the batches of one step apart."""
        if not self.diff_augment:
            return x
        return diffaugment.diff_augment(x, self.diff_augment,
                                        jax.random.fold_in(rng, 0x0D1FF + which))

    def make_optimizer(self):
        g_opt, schedule = build_optimizer(self.config.train)
        d_train = ml_collections.ConfigDict(self.config.train.to_dict())
        if self.config.gan.d_learning_rate is not None:
            d_train.learning_rate = self.config.gan.d_learning_rate
        d_opt, _ = build_optimizer(d_train)
        return {"generator": g_opt, "discriminator": d_opt}, schedule

    def init_state(self, init_rng, train_rng, example_batch, optimizer):
        variables = self.init_params(init_rng, example_batch)
        g_vars, d_vars = variables["generator"], variables["discriminator"]
        g_params, d_params = g_vars.pop("params"), d_vars.pop("params")
        return two_player.init_state(
            g_params, d_params, {"generator": g_vars, "discriminator": d_vars},
            optimizer, train_rng, use_ema=self.config.train.ema_decay > 0)

    def make_update(self, optimizer):
        g = self.config.gan
        dtype = self.config.train.compute_dtype
        return two_player.two_player_update(
            step_lib.mixed_precision(self.d_loss_fn, dtype),
            step_lib.mixed_precision(self.g_loss_fn, dtype), optimizer, n_disc=g.n_disc,
            ema_decay=self.config.train.ema_decay,
            d_wins_threshold=g.d_wins_threshold)

    def inference_params(self, state, use_ema):
        g_params = state.params["generator"]
        g_state = state.model_state["generator"]
        if use_ema and state.ema_params is not None:
            # The averaged weights with their averaged batch-norm statistics.
            g_params = state.ema_params["params"]
            g_state = state.ema_params["collections"]
        return {"generator": g_params,
                "generator_state": g_state,
                "discriminator": state.params["discriminator"],
                "discriminator_state": state.model_state["discriminator"]}

    def check_divergence(self, metrics, step):
        g = self.config.gan
        streak = int(metrics.get("d_wins_streak", 0))
        if g.d_wins_patience > 0 and streak >= g.d_wins_patience:
            return (
                f"the discriminator has won outright (D(x) > {g.d_wins_threshold}"
                f", D(G(z)) < {1 - g.d_wins_threshold:.2g}) in every step since "
                f"step {step - streak + 1} ({streak} steps, at step {step}); the "
                "generator gets no useful gradient. Try gan.loss=non_saturating, a "
                "lower gan.d_learning_rate, or gan.r1_gamma > 0 with "
                "model.d_norm=none; gan.d_wins_patience=0 disables this check")
        return None


class GANTask(TwoPlayerTask):
    """A GAN on image data (Goodfellow et al. 2014; Radford et al. 2015)."""

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        if dataset_info.kind != "image":
            raise ConfigError(
                f"the GAN task needs an image dataset; data.name="
                f"{config.data.name!r} is of kind {dataset_info.kind!r}")
        m, g = config.model, config.gan
        # --config.model.d_norm=none reaches here as None (the override
        # parser's spelling of None); both mean "no normalisation".
        for key in ("g_norm", "d_norm"):
            if m[key] is None:
                m[key] = "none"
        check_choice("model.architecture", m.architecture, gan_models.ARCHITECTURES)
        check_choice("model.latent_dist", m.latent_dist, LATENT_DISTS)
        check_choice("model.g_norm", m.g_norm, gan_models.G_NORMS)
        check_choice("model.d_norm", m.d_norm, gan_models.D_NORMS)
        if m.dense_hidden < 0:
            raise ConfigError(
                f"model.dense_hidden={m.dense_hidden} must be >= 0 (0: none)")
        if m.d_features is not None and m.d_features < 1:
            raise ConfigError(
                f"model.d_features={m.d_features} must be at least 1 (or "
                "unset to use model.features)")
        if m.code_classes < 0 or m.code_classes == 1:
            raise ConfigError(
                f"model.code_classes={m.code_classes} must be 0 (no code) or at "
                "least 2")
        if m.code_classes and m.architecture != "dcgan":
            raise ConfigError(
                f"model.code_classes={m.code_classes} needs model.architecture="
                f"'dcgan' (got {m.architecture!r}); set model.code_classes=0")
        if m.get("class_conditional", False) and m.code_classes:
            raise ConfigError(
                f"model.class_conditional=True with model.code_classes="
                f"{m.code_classes}: the label and InfoGAN's code share the "
                f"latent's one-hot slot; set model.code_classes=0")
        self.num_classes = conditional_classes(config, dataset_info)
        if g.info_weight < 0:
            raise ConfigError(f"gan.info_weight={g.info_weight} must be >= 0")
        self.d_uses_bn = m.architecture == "dcgan" and m.d_norm == "batch"
        if g.r1_gamma > 0 and self.d_uses_bn:
            raise ConfigError(
                "gan.r1_gamma > 0 needs a discriminator without batch norm "
                "(batch statistics couple the examples whose gradients R1 "
                "penalises); set --config.model.d_norm=none")
        self.image_shape = tuple(dataset_info.element_spec["image"])
        try:
            self.generator, self.discriminator = gan_models.make_models(
                m.architecture, self.image_shape, g_hidden=m.g_hidden,
                d_hidden=m.d_hidden, maxout_pieces=m.maxout_pieces,
                d_dropout=m.d_dropout, d_input_dropout=m.d_input_dropout,
                features=m.features, d_features=m.d_features,
                dense_hidden=m.dense_hidden, code_classes=m.code_classes,
                g_norm=m.g_norm, d_norm=m.d_norm, num_classes=self.num_classes)
        except ValueError as e:
            raise ConfigError(f"data.name={config.data.name!r}: {e}") from None

    # ------------------------------------------------------------------
    # The two models as pure functions of (params, collections).

    def latent(self, rng, num: int, labels=None):
        """``num`` draws of the prior p(z), ``[num, latents + code_classes]``:
        the noise, then (InfoGAN) a uniformly drawn one-hot code, or (a
        class-conditional GAN) the one-hot ``labels [num]``."""
        m = self.config.model
        if self.num_classes:
            z = self.latent_noise(rng, num)
            return jnp.concatenate(
                [z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], axis=1)
        # Without a code the noise comes from rng itself, so runs without one
        # draw the same latents as before codes existed.
        noise_rng, code_rng = jax.random.split(rng) if m.code_classes else (rng, None)
        shape = (num, m.latents)
        if m.latent_dist == "uniform":
            z = jax.random.uniform(noise_rng, shape, minval=-1.0, maxval=1.0)
        else:
            z = jax.random.normal(noise_rng, shape)
        if not m.code_classes:
            return z
        codes = jax.random.randint(code_rng, (num,), 0, m.code_classes)
        return jnp.concatenate(
            [z, jax.nn.one_hot(codes, m.code_classes, dtype=z.dtype)], axis=1)

    def latent_noise(self, rng, num: int):
        """The noise part of the latent, ``[num, latents]``."""
        m = self.config.model
        if m.latent_dist == "uniform":
            return jax.random.uniform(rng, (num, m.latents), minval=-1.0, maxval=1.0)
        return jax.random.normal(rng, (num, m.latents))

    def random_labels(self, rng, num: int):
        """Uniformly drawn labels ``[num]`` of a class-conditional GAN, else None."""
        if not self.num_classes:
            return None
        return step_lib.shard_batch_axis(
            jax.random.randint(rng, (num,), 0, self.num_classes))

    def codes_of(self, z):
        """The categorical codes ``[B]`` of latents drawn by ``latent``."""
        return jnp.argmax(z[:, self.config.model.latents:], axis=1)

    def generate(self, g_params, g_state, z, *, train: bool):
        """``(images in [-1, 1], new collections)``."""
        variables = {"params": g_params, **g_state}
        z = z.astype(step_lib.params_dtype(g_params))  # bfloat16 under mixed precision
        if train and g_state:
            return self.generator.apply(variables, z, train=True,
                                        mutable=list(g_state))
        return self.generator.apply(variables, z, train=train), g_state

    def discriminate(self, d_params, d_state, x, rng, *, train: bool,
                     with_code: bool = False, labels=None):
        """``(logits [B], new collections)`` of images ``x`` in [-1, 1].

        With ``with_code`` (and ``model.code_classes`` > 0), the first element
        is ``(logits [B], code logits [B, code_classes])``.
        """
        variables = {"params": d_params, **d_state}
        x = x.astype(step_lib.params_dtype(d_params))
        rngs = {"dropout": rng}
        kwargs = {"labels": labels} if self.num_classes else {}
        if train and d_state:
            out, d_state = self.discriminator.apply(
                variables, x, train=True, rngs=rngs, mutable=list(d_state), **kwargs)
        else:
            out = self.discriminator.apply(variables, x, train=train, rngs=rngs, **kwargs)
        if self.config.model.code_classes and not with_code:
            out = out[0]
        return out, d_state

    # ------------------------------------------------------------------
    # Task interface.

    def init_params(self, rng, example_batch):
        """``{'generator': variables, 'discriminator': variables}`` (all collections)."""
        g_rng, d_rng, drop_rng = jax.random.split(rng, 3)
        m = self.config.model
        z = jnp.zeros((1, m.latents + m.code_classes + self.num_classes), jnp.float32)
        g_vars = self.generator.init(g_rng, z, train=False)
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        kwargs = {"labels": jnp.zeros((1,), jnp.int32)} if self.num_classes else {}
        d_vars = self.discriminator.init({"params": d_rng, "dropout": drop_rng},
                                         x, train=False, **kwargs)
        return {"generator": dict(g_vars), "discriminator": dict(d_vars)}

    def _fake(self, g_params, g_state, rng, num: int, *, train: bool, labels=None):
        """``(images, new collections, latents)`` of ``num`` new draws (of
        the given labels, for a class-conditional GAN)."""
        z = step_lib.shard_batch_axis(self.latent(rng, num, labels))
        return self.generate(g_params, g_state, z, train=train) + (z,)

    def _info_term(self, code_logits, z, loss, metrics):
        """Adds InfoGAN's weighted code cross-entropy to ``loss``/``metrics``."""
        info, info_metrics = adversarial.info_loss(code_logits, self.codes_of(z))
        return (loss + self.config.gan.info_weight * info,
                dict(metrics, **info_metrics))

    def d_loss_fn(self, d_params, g_params, model_state, batch, rng):
        """The discriminator's loss (``two_player_update``'s ``d_loss_fn``)."""
        z_rng, real_rng, fake_rng = jax.random.split(rng, 3)
        real = batch["image"] * 2.0 - 1.0
        labels = batch["label"] if self.num_classes else None
        fake, _, z = self._fake(g_params, model_state["generator"], z_rng,
                                real.shape[0], train=True, labels=labels)
        fake = jax.lax.stop_gradient(fake)
        # DiffAugment: both batches, each with its own transformations.
        real, fake = self.augmented(real, rng, 0), self.augmented(fake, rng, 1)
        coded = bool(self.config.model.code_classes)
        # Real and generated batches go through D separately, as in DCGAN,
        # so batch norm never mixes them.
        d_state = model_state["discriminator"]
        real_logits, d_state = self.discriminate(d_params, d_state, real,
                                                 real_rng, train=True, labels=labels)
        fake_logits, d_state = self.discriminate(d_params, d_state, fake,
                                                 fake_rng, train=True,
                                                 with_code=coded, labels=labels)
        if coded:
            fake_logits, code_logits = fake_logits
        loss, metrics = adversarial.discriminator_loss(
            self.config.gan.loss, real_logits, fake_logits)
        if coded:  # Q's head and D's body learn to read the code.
            loss, metrics = self._info_term(code_logits, z, loss, metrics)
        gamma = self.config.gan.r1_gamma
        if gamma > 0:
            r1 = adversarial.r1_penalty(
                lambda x: self.discriminate(d_params, model_state["discriminator"],
                                            x, real_rng, train=True, labels=labels)[0],
                real)
            loss = loss + 0.5 * gamma * r1
            metrics["r1"] = r1
        return loss, (metrics, dict(model_state, discriminator=d_state))

    def g_loss_fn(self, g_params, d_params, model_state, batch, rng):
        """The generator's loss (``two_player_update``'s ``g_loss_fn``)."""
        z_rng, d_rng = jax.random.split(rng)
        labels = batch["label"] if self.num_classes else None
        fake, g_state, z = self._fake(g_params, model_state["generator"], z_rng,
                                      batch["image"].shape[0], train=True, labels=labels)
        weight = self.config.gan.get("mode_seeking", 0.0)
        ms_term = None
        if weight > 0:
            # A second draw of the same labels; its batch statistics are dropped.
            other, _, z2 = self._fake(g_params, model_state["generator"],
                                      jax.random.fold_in(z_rng, 1), fake.shape[0],
                                      train=True, labels=labels)
            ratio = (jnp.mean(jnp.abs(fake - other))
                     / jnp.mean(jnp.abs(z - z2)[:, :self.config.model.latents]))
            ms_term = 1.0 / (ratio + 1e-5)
        fake = self.augmented(fake, rng, 2)
        coded = bool(self.config.model.code_classes)
        # D's batch statistics move only in D's own steps.
        logits, _ = self.discriminate(d_params, model_state["discriminator"],
                                      fake, d_rng, train=True, with_code=coded,
                                      labels=labels)
        if coded:
            logits, code_logits = logits
        loss, metrics = adversarial.generator_loss(self.config.gan.loss, logits)
        if coded:  # G makes its code readable (InfoGAN); D's step logs it.
            loss, _ = self._info_term(code_logits, z, loss, metrics)
        if ms_term is not None:
            loss = loss + weight * ms_term
            metrics = dict(metrics, mode_seeking=ms_term)
        return loss, (metrics, dict(model_state, generator=g_state))

    def eval_fn(self, params, batch, rng, *, final):
        """The discriminator's view: mean ``D(x)`` on test images and ``D(G(z))``
        on as many samples; per example, in inference mode."""
        del final
        z_rng, d_rng = jax.random.split(rng)
        real = batch["image"] * 2.0 - 1.0
        labels = batch["label"] if self.num_classes else None
        fake, _, _ = self._fake(params["generator"], params["generator_state"],
                                z_rng, real.shape[0], train=False, labels=labels)
        d_state = params["discriminator_state"]
        real_logits, _ = self.discriminate(params["discriminator"], d_state, real,
                                           d_rng, train=False, labels=labels)
        fake_logits, _ = self.discriminate(params["discriminator"], d_state, fake,
                                           d_rng, train=False, labels=labels)
        return {"d_real": jax.nn.sigmoid(real_logits),
                "d_fake": jax.nn.sigmoid(fake_logits)}

    def sample(self, params, rng, num_samples: int, *, labels=None):
        """Images in [0, 1]; a class-conditional GAN draws labels uniformly
        unless ``labels [num_samples]`` are given."""
        if self.num_classes and labels is None:
            rng, label_rng = jax.random.split(rng)
            labels = self.random_labels(label_rng, num_samples)
        x, _, _ = self._fake(params["generator"], params["generator_state"], rng,
                             num_samples, train=False, labels=labels)
        return (x + 1.0) * 0.5

    def sample_fn(self, params, rng, num_samples):
        return self.sample(params, rng, num_samples)

    def ood_scores(self, params, images, rng, inversion_steps: int = 200,
                   inversion_lr: float = 0.05) -> dict:
        """Per-example scores of images in [0, 1], higher = odder:
        ``discriminator``, minus the discriminator's logit (it was trained to
        call the training data real), and ``inversion``, the mean squared
        error per pixel of the generator's closest image, found by
        ``inversion_steps`` of Adam on the latent from a prior draw (the
        residual of Schlegl et al. 2017's AnoGAN, without its feature term).
        A class-conditional GAN is read with label 0 for both."""
        x = images * 2.0 - 1.0
        num = x.shape[0]
        labels = jnp.zeros((num,), jnp.int32) if self.num_classes else None
        d_rng, z_rng = jax.random.split(rng)
        logits, _ = self.discriminate(params["discriminator"],
                                      params["discriminator_state"], x, d_rng,
                                      train=False, labels=labels)
        z0 = self.latent(z_rng, num, labels)
        noise_dims = self.config.model.latents

        def residual(noise, z_rest):
            z = jnp.concatenate([noise, z_rest], axis=1)
            fake, _ = self.generate(params["generator"], params["generator_state"], z,
                                    train=False)
            return jnp.mean(jnp.square(fake - x).reshape(num, -1), axis=1)

        optimizer = optax.adam(inversion_lr)
        noise, rest = z0[:, :noise_dims], z0[:, noise_dims:]

        def step(carry, _):
            noise, opt_state = carry
            grads = jax.grad(lambda n: jnp.sum(residual(n, rest)))(noise)
            updates, opt_state = optimizer.update(grads, opt_state)
            noise = optax.apply_updates(noise, updates)
            if self.config.model.latent_dist == "uniform":
                noise = jnp.clip(noise, -1.0, 1.0)
            return (noise, opt_state), None

        (noise, _), _ = jax.lax.scan(step, (noise, optimizer.init(noise)), None,
                                     length=inversion_steps)
        # The residual on [0, 1] pixels (the generator works on [-1, 1]).
        return {"discriminator": -logits.reshape(num),
                "inversion": 0.25 * residual(noise, rest)}

    def interpolate(self, params, rng, num_pairs: int = 4, num_steps: int = 10):
        """Samples along straight lines between pairs of latents,
        ``[num_pairs * num_steps, H, W, C]`` (Radford et al. 2015, section 6.1)."""
        label_rng, rng = jax.random.split(rng) if self.num_classes else (None, rng)
        labels = self.random_labels(label_rng, num_pairs)
        if labels is not None:  # each pair keeps one label along its line
            labels = jnp.repeat(labels, 2)
        ends = self.latent(rng, 2 * num_pairs, labels).reshape(num_pairs, 2, -1)
        t = jnp.linspace(0.0, 1.0, num_steps)[None, :, None]
        z = (1.0 - t) * ends[:, :1] + t * ends[:, 1:]  # [pairs, steps, L]
        x, _ = self.generate(params["generator"], params["generator_state"],
                             z.reshape(num_pairs * num_steps, -1), train=False)
        return (x + 1.0) * 0.5

    def by_code(self, params, rng, num_columns: int = 10):
        """InfoGAN's figure: row ``k`` holds code ``k``, column ``j`` the same
        noise in every row, ``[code_classes * num_columns, H, W, C]``."""
        m = self.config.model
        noise = self.latent(rng, num_columns)[:, :m.latents]
        codes = jnp.repeat(jnp.eye(m.code_classes, dtype=noise.dtype),
                           num_columns, axis=0)
        z = jnp.concatenate([jnp.tile(noise, (m.code_classes, 1)), codes], axis=1)
        x, _ = self.generate(params["generator"], params["generator_state"], z,
                             train=False)
        return (x + 1.0) * 0.5

    def by_class(self, params, rng, num_columns: int = 10):
        """Row ``k`` holds class ``k``, column ``j`` the same noise in every
        row, ``[num_classes * num_columns, H, W, C]``."""
        noise = self.latent_noise(rng, num_columns)
        labels = jnp.repeat(jnp.arange(self.num_classes), num_columns)
        z = jnp.concatenate([jnp.tile(noise, (self.num_classes, 1)),
                             jax.nn.one_hot(labels, self.num_classes, dtype=noise.dtype)],
                            axis=1)
        x, _ = self.generate(params["generator"], params["generator_state"], z,
                             train=False)
        return (x + 1.0) * 0.5

    def figures(self, params, batch, rng):
        del batch
        figures = {"interpolation": (np.asarray(self.interpolate(params, rng)), 10)}
        if self.config.model.code_classes:
            figures["codes"] = (np.asarray(self.by_code(params, rng)), 10)
        if self.num_classes:
            figures["classes"] = (np.asarray(self.by_class(params, rng)), 10)
        return figures
