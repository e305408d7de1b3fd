"""A score SDE on MNIST (Song et al. 2021), judged by the shared sample
metrics, with its exact likelihood through the probability-flow ODE.

The diffusion task's U-Net predicts the noise of ``x_t = mean(t) x_0 +
std(t) z`` on the continuous VP SDE (``--config.sde.kind=subvp`` or ``ve``
for the others), trained by denoising score matching with ``t ~ U[1e-5,
1]``; the score is ``-eps / std(t)``. Samples come from any of the shared
samplers (DPM-Solver++ by default) or the SDE's own (``em``: reverse-SDE
Euler-Maruyama, ``pc``: predictor-corrector), each reporting its network
evaluations (``nfe``). Offline:

    python -m experiments.score_sde_mnist --preset=cpu --workdir=/tmp/score_sde_mnist \\
        --config.data.manual_dir=../shared/data/mnist

At the end, ``eval.json`` holds the sample-quality metrics and
``eval/bits_per_dim``: the probability-flow ODE's likelihood of uniformly
dequantised test images (Hutchinson's estimator, adaptive Tsit5).
"""

from genjax import cli, registry
from genjax.tasks import score

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    config = score.base_config("mnist")
    score.mnist_preset(config, preset)
    if preset == "cpu":
        config.sde.loss_weighting = "min_snr"  # as ddpm_mnist's cpu preset
        config.sample.guidance_scale = 1.25
    elif preset == "paper":
        # Song et al. 2021's DDPM++ (VP, continuous) is a CIFAR-10 network.
        config.eval.compare_samplers = ("pc:1000", "adaptive")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="score_sde_mnist",
    family="score",
    dataset="mnist",
    paper="Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021 (score SDEs)",
    get_config=get_config,
    presets=PRESETS,
    make_task=score.ScoreSDETask,
    results=(
        registry.Result(
            preset="cpu",
            metrics={"eval/classifier_score": 9.26, "eval/classifier_score_data": 9.64,
                     "eval/classes_hit": 10, "eval/class_kl": 0.0042,
                     "eval/fd": 12.5, "eval/fd_floor": 4.86, "eval/kid": 3.15,
                     "eval/kid_floor": 0.49, "eval/nfe": 20,
                     "eval/bits_per_dim": 3.354, "eval/ode_nfe": 745,
                     "eval/sample_seconds": 61.3},
            units={"eval/class_kl": "nats", "eval/bits_per_dim": "bits/dim",
                   "eval/sample_seconds": "s"},
            command="python -m experiments.score_sde_mnist --preset=cpu "
                    "--workdir=/tmp/score_sde_mnist --config.data.manual_dir=../shared/data/mnist",
            date="2026-12-06", host="2-core CPU, 2 devices", wall_time="12 min 54 s",
            notes="The VP SDE (beta 0.1 to 20) with Min-SNR-5 loss weights, 2,200 "
                  "steps of 64, the class-conditional U-Net of 280,881 parameters of "
                  "ddpm_mnist's cpu preset. 1,000 samples by DPM-Solver++ (2M, 20 "
                  "network evaluations) with classifier-free guidance w = 1.25 at "
                  "noise levels sigma/alpha in (1, 10]: FD 2.57 times its floor, "
                  "within the issue's bar of 3 with a score above 9. These metrics "
                  "are the checkpoint's `--mode=eval` (185 s) after the shared "
                  "samplers' grid came to stop one interval above t_min (20 "
                  "evaluations now make 20 moves; before, 19: score 9.23, FD 11.9, "
                  "KID 2.80, from the training run's own final evaluation). "
                  "`eval/bits_per_dim` is the probability-flow ODE's likelihood of one "
                  "uniform dequantisation of each of the first 50 test images "
                  "(Hutchinson's estimator, one Rademacher probe, Tsit5 at tolerance "
                  "1e-5, 745 network evaluations per image): below ddpm_mnist's "
                  "variational bound on the same images (3.74 with the same weights). "
                  "The same recipe without the weights, sampled at w = 2 on (1, 10] "
                  "(2026-12-06, 15 min 33 s on a shared host): score 9.11, FD 16.5 "
                  "(3.40 times the floor), 2.015 bits/dim; docs/score.md compares "
                  "them. `eval/loss` 0.0164 (weighted) over the test split."),
    ),
))

if __name__ == "__main__":
    cli.main("score_sde_mnist")
