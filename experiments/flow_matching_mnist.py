"""Flow matching on MNIST (Lipman et al. 2023; Liu et al. 2023's rectified
flow), judged by the shared sample metrics, with its likelihood through the
same ODE machinery as the score SDE's.

The diffusion task's U-Net regresses the velocity ``data - noise`` of the
linear path ``x_tau = (1 - tau) noise + tau data``; samples follow the ODE
with Euler's method (the default, ``sample.steps`` evaluations), any of the
shared samplers (DPM-Solver++, EDM's Heun, adaptive Tsit5), each reporting
its network evaluations (``nfe``). Offline:

    python -m experiments.flow_matching_mnist --preset=cpu \\
        --workdir=/tmp/flow_matching_mnist --config.data.manual_dir=../shared/data/mnist
"""

from genjax import cli, registry
from genjax.tasks import diffusion, score

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = score.flow_matching_config("mnist")
    config.model.attention_resolutions = (7,)
    config.eval.batch_size = 100
    config.sample.num_samples = 100
    if preset == "smoke":
        score.smoke_preset(config)
    elif preset == "cpu":
        diffusion.cpu_preset(config, num_steps=2200)
        config.eval.likelihood_num_examples = 50
        # Classifier-free guidance on an interval of noise levels
        # (Kynkaanniemi et al. 2024), as ddpm_mnist's cpu preset.
        config.sample.guidance_scale = 2.0
        config.sample.guidance_interval = (1.0, 10.0)
        config.sample.steps = 20
    elif preset == "paper":
        # Lipman et al.'s image models are U-Nets of Dhariwal & Nichol's
        # family; Ho et al.'s U-Net at 28x28 as ddpm_mnist's paper preset.
        config.model.channels = 128
        config.train.batch_size = 128
        config.train.num_steps = 800_000
        config.train.log_every = 1000
        config.train.eval_every = 50_000
        config.train.checkpoint_every = 10_000
        config.eval.compare_samplers = ("adaptive", "dpm2:10")
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="flow_matching_mnist",
    family="score",
    dataset="mnist",
    paper="Lipman, Chen, Ben-Hamu, Nickel & Le 2023 (flow matching); "
          "Liu, Gong & Liu 2023 (rectified flow)",
    get_config=get_config,
    presets=PRESETS,
    make_task=score.FlowMatchingTask,
))

if __name__ == "__main__":
    cli.main("flow_matching_mnist")
