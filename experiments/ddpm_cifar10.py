"""DDPM on 32x32 colour images (Ho et al. 2020): CIFAR-10, or shapes32.

* ``paper``: Ho et al. 2020's CIFAR-10 model (appendix B): a 35.7M-parameter
  U-Net (channels 128 x (1, 2, 2, 2), 2 residual blocks per level,
  self-attention at 16x16, dropout 0.1), T = 1000 with linear betas from
  1e-4 to 0.02, Adam at 2e-4 with 5000 warmup steps, batch 128, 800k steps,
  gradient clipping at 1, EMA 0.9999. CIFAR-10 must be prepared first: on a
  machine with internet (``tfds build cifar10 --file_format=array_record``)
  or offline from the CIFAR-10 binary files with
  ``--config.data.manual_dir=DIR``.
* ``cpu``: ``ddpm_mnist``'s cpu recipe (a class-conditional U-Net of 16
  channels, 2,200 steps, guidance w = 3) on CIFAR-10;
  ``--config.data.name=shapes32`` runs it without files.
* ``smoke``: a few steps on ``shapes32``, genjax's synthetic 32x32 colour
  shapes, so it runs anywhere.

    python -m experiments.ddpm_cifar10 --preset=paper --workdir=/tmp/ddpm_cifar10

No result is recorded yet (CIFAR-10 cannot be downloaded on the machines
this was built on, and the paper preset needs an accelerator); a measured run
goes in ``results`` below, from which README's results table is generated.
"""

from genjax import cli, registry
from genjax.tasks import diffusion

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = diffusion.base_config("cifar10")
    config.model.attention_resolutions = (16,)
    config.eval.batch_size = 100
    config.sample.num_samples = 100
    if preset == "smoke":
        config.data.name = "shapes32"
        config.data.num_train = 64
        config.data.num_test = 50
        diffusion.smoke_preset(config)
        # 64 images are too few for a domain classifier to judge samples by
        # (dcgan_cifar10's smoke preset runs the protocol on colour images).
        config.eval.sample_quality.num_samples = 0
        config.eval.sample_quality.num_samples_during_training = 0
    elif preset == "cpu":
        # ddpm_mnist's cpu recipe (not run on CIFAR-10 here).
        diffusion.cpu_preset(config, num_steps=2200)
        config.model.attention_resolutions = (8,)
        config.sample.guidance_scale = 3.0
    elif preset == "paper":
        config.model.channels = 128
        config.model.channel_mults = (1, 2, 2, 2)
        config.model.num_res_blocks = 2
        config.model.dropout = 0.1
        config.train.batch_size = 128
        config.train.learning_rate = 2e-4
        config.train.warmup_steps = 5000
        config.train.grad_clip_norm = 1.0
        config.train.ema_decay = 0.9999
        config.train.num_steps = 800_000
        config.train.log_every = 1000
        config.train.eval_every = 50_000
        config.train.checkpoint_every = 10_000
        config.eval.bound_num_examples = 1000
        config.eval.compare_samplers = ("ddpm",)
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="ddpm_cifar10",
    family="diffusion",
    dataset="cifar10",
    paper="Ho, Jain & Abbeel 2020 (DDPM)",
    get_config=get_config,
    presets=PRESETS,
    make_task=diffusion.DiffusionTask,
    results=(),
))

if __name__ == "__main__":
    cli.main("ddpm_cifar10")
