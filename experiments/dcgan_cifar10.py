"""DCGAN on 32x32 colour images (Radford et al. 2015): CIFAR-10, or shapes32.

The generator projects 100 uniform latents to a 4x4 map and doubles it three
times (transposed convolutions, batch norm, ReLU; tanh output); the
discriminator halves 32x32 three times (convolutions, leaky ReLU 0.2, batch
norm after the first). Adam, lr 2e-4, beta1 = 0.5.

* ``paper``: CIFAR-10 through TFDS at the paper's width (features 128: 512
  channels at the 4x4 seed), batch 128. CIFAR-10 must be prepared first,
  either on a machine with internet (``tfds build cifar10
  --file_format=array_record``) or offline from the CIFAR-10 binary files
  with ``--config.data.manual_dir=DIR``.
* ``cpu``: CIFAR-10 as well, at a width and length a 2-core CPU trains in
  about 15 minutes; ``--config.data.name=shapes32`` runs it without files.
* ``smoke``: a few steps on ``shapes32``, genjax's synthetic 32x32 colour
  shapes, so it runs anywhere.

    python -m experiments.dcgan_cifar10 --preset=paper --workdir=/tmp/dcgan_cifar10

No result is recorded yet (CIFAR-10 cannot be downloaded on the machines
this was built on, and the paper preset needs an accelerator); a measured run
goes in ``results`` below, from which README's results table is generated.
"""

from genjax import cli, registry
from genjax.tasks import gan

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = gan.base_config("cifar10")
    config.model.architecture = "dcgan"
    config.eval.batch_size = 500
    config.sample.num_samples = 100
    if preset == "smoke":
        config.data.name = "shapes32"
        gan.smoke_preset(config)
    elif preset == "cpu":
        config.model.features = 32
        config.train.batch_size = 64
        config.train.num_steps = 5000
        config.train.log_every = 200
        config.train.eval_every = 2500
        config.train.checkpoint_every = 1000
    elif preset == "paper":
        # Radford et al. 2015, section 4 and figure 1 (1024 channels at the
        # 4x4 seed for 64x64 LSUN; 512 for 32x32 here).
        config.model.features = 128
        config.train.batch_size = 128
        config.train.num_steps = 25 * 390  # 25 epochs of 50,000
        config.train.log_every = 500
        config.train.eval_every = 3900
        config.train.checkpoint_every = 1950
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="dcgan_cifar10",
    family="gan",
    dataset="cifar10",
    paper="Radford, Metz & Chintala 2015 (DCGAN)",
    get_config=get_config,
    presets=PRESETS,
    make_task=gan.GANTask,
    results=(),
))

if __name__ == "__main__":
    cli.main("dcgan_cifar10")
