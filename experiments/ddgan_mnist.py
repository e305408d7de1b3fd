"""The denoising diffusion GAN on MNIST (Xiao, Kreis & Vahdat 2022):
diffusion in T = 4 large steps, each reverse step a conditional GAN, sampled
in 4 network calls.

The generator is the diffusion task's U-Net with a latent input (its
output through tanh is a clean image); the discriminator judges pairs of
consecutive steps at their step. Non-saturating loss with an R1 penalty on
real data, Adam (0.5, 0.9), an EMA of the generator. Offline:

    python -m experiments.ddgan_mnist --preset=cpu --workdir=/tmp/ddgan_mnist \\
        --config.data.manual_dir=../shared/data/mnist
"""

from genjax import cli, config as config_lib, registry
from genjax.tasks import ddgan

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = ddgan.base_config("mnist")
    config.eval.batch_size = 500
    config.sample.num_samples = 100
    q = config.eval.sample_quality
    if preset == "smoke":
        m = config.model
        m.channels, m.channel_mults, m.num_groups, m.latents = 8, (1, 2), 4, 16
        m.d_features, m.d_levels = 8, 1
        config.train.batch_size = 16
        config_lib.smoke_schedule(config)
        config.eval.batch_size = 50
        q.num_samples, q.num_samples_during_training, q.kid_subset_size = 100, 0, 50
        q.batch_size = 100
    elif preset == "cpu":
        config.cpu_devices = 2
        config.model.channels = 16
        # Half the default discriminator width: 0.46 s a step against 0.81 s
        # (the discriminator and its R1 penalty were most of the step).
        config.model.d_features = 16
        config.train.batch_size = 64
        # The generator slower than the discriminator: at the paper's 1.6e-4
        # against 1.25e-4 the discriminator fell to chance within 150 steps
        # and the generator drew one blurred digit (docs/gan.md).
        config.train.learning_rate = 8e-5
        config.gan.d_learning_rate = 2e-4
        config.train.ema_decay = 0.995  # 0.999 still weighs the start 18% at step 1,700
        config.train.num_steps = 1700
        config.train.log_every = 100
        config.train.eval_every = 500
        config.train.checkpoint_every = 500
        q.num_samples, q.num_samples_during_training, q.batch_size = 1000, 200, 500
    elif preset == "paper":
        # Xiao et al.'s CIFAR-10 recipe where it carries over: batch 64,
        # EMA 0.9999, a wider generator.
        config.model.channels = 64
        config.model.channel_mults = (1, 2, 2)  # 28 -> 14 -> 7
        config.model.attention_resolutions = (7,)
        config.train.batch_size = 64
        config.train.ema_decay = 0.9999
        config.train.num_steps = 400_000
        config.train.log_every = 1000
        config.train.eval_every = 50_000
        config.train.checkpoint_every = 10_000
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="ddgan_mnist",
    family="gan",
    dataset="mnist",
    paper="Xiao, Kreis & Vahdat 2022 (denoising diffusion GANs)",
    get_config=get_config,
    presets=PRESETS,
    make_task=ddgan.DDGANTask,
))

if __name__ == "__main__":
    cli.main("ddgan_mnist")
