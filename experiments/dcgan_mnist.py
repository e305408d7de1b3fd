"""DCGAN on MNIST (Radford et al. 2015), judged by the shared sample metrics.

The generator projects 100 uniform latents to a 7x7 map and doubles it twice
with strided transposed convolutions (batch norm and ReLU, tanh output); the
discriminator halves 28x28 twice with strided convolutions and leaky ReLU
(batch norm after the first). Adam, lr 2e-4, beta1 = 0.5, non-saturating
generator loss; samples come from an EMA of the generator. Offline, genjax
prepares MNIST from the four idx files:

    python -m experiments.dcgan_mnist --preset=cpu --workdir=/tmp/dcgan_mnist \
        --config.data.manual_dir=../shared/data/mnist

Sample quality (``eval.json``): 10,000 samples against the 10,000 test
images in the feature space of a LeNet classifier that genjax trains on the
train split and caches in the data directory; ``eval/fd`` beside
``eval/fd_floor`` (5,000... see genjax/evaluate/sample_quality.py for the
protocol), KID, the classifier score (max 10) and mode coverage.

Measured: see the registry entry below (``expected``) and README.
"""

from genjax import cli, registry
from genjax import config as config_lib
from genjax.tasks import gan

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = gan.base_config("mnist")
    config.model.architecture = "dcgan"
    config.eval.batch_size = 500
    config.sample.num_samples = 100
    q = config.eval.sample_quality
    if preset == "smoke":
        config.model.features = 8
        config.model.latents = 16
        config.train.batch_size = 32
        config_lib.smoke_schedule(config)
        q.num_samples = 200
        q.num_samples_during_training = 100
        q.kid_subset_size = 100
    elif preset == "cpu":
        config.model.features = 32
        config.train.batch_size = 64
        config.train.num_steps = 6000
        config.train.log_every = 200
        config.train.eval_every = 2000
        config.train.checkpoint_every = 1000
    elif preset == "paper":
        # Radford et al. 2015, section 4: minibatches of 128, Adam 2e-4,
        # beta1 0.5, weights from N(0, 0.02), leaky slope 0.2; the widths of
        # their figure 1 scaled to 28x28 (128 and 64 channels... of features 64).
        config.model.features = 64
        config.train.batch_size = 128
        config.train.num_steps = 25 * 469  # 25 epochs
        config.train.log_every = 500
        config.train.eval_every = 2345
        config.train.checkpoint_every = 2345
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="dcgan_mnist",
    family="gan",
    dataset="mnist",
    paper="Radford, Metz & Chintala 2015 (DCGAN)",
    get_config=get_config,
    presets=PRESETS,
    make_task=gan.GANTask,
    expected={},
))

if __name__ == "__main__":
    cli.main("dcgan_mnist")
