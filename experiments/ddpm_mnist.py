"""DDPM on MNIST (Ho et al. 2020), judged by the shared sample metrics.

A U-Net in the style of Ho et al. 2020 (sinusoidal timestep embedding,
residual blocks with group norm, self-attention at the lowest resolution,
dropout) predicts the noise of ``x_t ~ q(x_t | x_0)``; T = 1000 steps of a
linear beta schedule from 1e-4 to 0.02; Adam with warmup, gradient clipping
at 1 and an EMA of the parameters, which samples and the bound use.
Offline, genjax prepares MNIST from the four idx files:

    python -m experiments.ddpm_mnist --preset=cpu --workdir=/tmp/ddpm_mnist \\
        --config.data.manual_dir=../shared/data/mnist

At the end, ``eval.json`` holds the variational bound in bits per dimension
(``eval/bits_per_dim``, on ``eval.bound_num_examples`` test images) and the
shared sample-quality metrics of DDIM (``eval/...``) and of 1000-step
ancestral sampling (``eval/ddpm/...``), each with its sampling time
(``sample_seconds``). ``--mode=inpaint`` fills the centre of test images.

Measured 2026-12-03 on a 2-core CPU, ``--preset=cpu`` (the command above:
2,200 steps of 64, a class-conditional U-Net of 280,881 parameters; samples
by DDIM with 50 steps and classifier-free guidance w = 3, 1,000 of them
against the 10,000 test images): eval/classifier_score 9.34 (real test
images: 9.67), eval/classes_hit 10, eval/class_kl 0.0036 nats, eval/fd 28.4
beside eval/fd_floor 4.15 (1,000 real training images), eval/bits_per_dim
2.05 (the bound on the first 50 test images: 1,117 nats, of which the
decoder's L_0 is 526). Guidance trades fidelity to the class for spread:
the same model with w = 1 scores 8.75 with FD 16.1 and class KL 0.0072
(on the one-device run's checkpoint). Wall time: 14 min 43 s end to end on
a quiet host, with the CPU split into 2 devices (``cpu_devices``; training
at 3.3-3.7 steps/s; the final evaluation 206 s, of which 143 s drew the
1,000 guided samples). As one device the same run took 20 min 22 s and gave
the same numbers to three digits. The ``paper`` preset was not run here.
"""

from genjax import cli, registry
from genjax.tasks import diffusion

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = diffusion.base_config("mnist")
    config.model.attention_resolutions = (7,)
    config.eval.batch_size = 100
    config.sample.num_samples = 100
    if preset == "smoke":
        diffusion.smoke_preset(config)
    elif preset == "cpu":
        diffusion.cpu_preset(config, num_steps=2200)
        # Classifier-free guidance (Ho & Salimans 2022): classifier score
        # 9.34 at w = 3 against 8.75 at w = 1, FD 28.4 against 16.1.
        config.sample.guidance_scale = 3.0
    elif preset == "paper":
        # Ho et al. 2020's CIFAR-10 network and training (appendix B), for
        # 28x28: channels 128 x (1, 2, 2), 2 residual blocks per level,
        # attention at 7x7 (their 16x16 level's place), dropout 0.1.
        config.model.channels = 128
        config.model.channel_mults = (1, 2, 2)
        config.train.batch_size = 128
        config.train.num_steps = 800_000
        config.train.log_every = 1000
        config.train.eval_every = 50_000
        config.train.checkpoint_every = 10_000
        config.eval.compare_samplers = ("ddpm",)
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="ddpm_mnist",
    family="diffusion",
    dataset="mnist",
    paper="Ho, Jain & Abbeel 2020 (DDPM); Song, Meng & Ermon 2021 (DDIM)",
    get_config=get_config,
    presets=PRESETS,
    make_task=diffusion.DiffusionTask,
    expected={
        "cpu": "eval/classifier_score 9.34, classes_hit 10, class_kl 0.0036, "
               "fd 28.4 (floor 4.15, 1,000 samples), bits_per_dim 2.05 "
               "(50 test images) (2026-12-03, 2-core CPU split in 2 devices, "
               "14 min 43 s)",
    },
))

if __name__ == "__main__":
    cli.main("ddpm_mnist")
