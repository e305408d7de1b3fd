"""A mixture of Bernoulli distributions on binarised MNIST, fitted by EM.

The classical baseline of the binarised-MNIST likelihood table (Bishop 2006,
sec. 9.3.3; the mixture of Bernoullis that NADE's and the VAE's papers beat):
``p(x) = sum_k pi_k prod_d p_kd^x_d (1 - p_kd)^(1 - x_d)``, fitted by batch
EM on all 60,000 training images at every step (the grey levels as soft
targets). The reported NLL is exact, in nats per test example, on the same
dynamic binarisation of each test image as ``vae_mnist`` (the key of its
index), so the two rows compare directly:

    python -m experiments.bmm_mnist --preset=cpu --workdir=/tmp/bmm_mnist \\
        --config.data.manual_dir=../shared/data/mnist

Samples are the mean images of drawn components (``sample.mean_image``), as
the VAE shows its decoder's means; ``--config.sample.mean_image=false``
draws binary pixels instead.
"""

from genjax import cli, registry
from genjax.tasks import mixture

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (minutes), paper."""
    config = mixture.base_config("mnist")
    config.model.distribution = "bernoulli"
    config.sample.mean_image = True
    config.sample.num_samples = 100
    config.eval.batch_size = 1000
    q = config.eval.sample_quality
    q.num_samples_during_training = 0
    t = config.train
    if preset == "smoke":
        config.model.components = 10
        t.batch_size = 512
        t.num_steps, t.log_every, t.eval_every, t.checkpoint_every = 6, 1, 3, 3
        config.sample.num_samples = 16
        q.num_samples, q.batch_size, q.kid_subset_size = 100, 100, 50
    elif preset == "cpu":
        # 2,000 components: 118 nats at 60 iterations (200: 131, 500: 124,
        # 1,000: 121 at 40-60 iterations), 2.6 s an iteration.
        config.model.components = 2000
        t.batch_size = 60_000
        t.num_steps, t.log_every, t.eval_every, t.checkpoint_every = 60, 5, 60, 20
    elif preset == "paper":
        # Larger mixtures keep gaining on the test set up to a few thousand
        # components; 5,000 run to convergence.
        config.model.components = 5000
        t.batch_size = 60_000
        t.num_steps, t.log_every, t.eval_every, t.checkpoint_every = 200, 10, 100, 20
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="bmm_mnist",
    family="mixture",
    dataset="mnist",
    paper="Expectation-maximisation (Dempster, Laird & Rubin 1977); mixtures of "
          "Bernoulli distributions (Bishop 2006, sec. 9.3.3)",
    get_config=get_config,
    presets=PRESETS,
    make_task=mixture.MixtureTask,
    results=(
        registry.Result(
            preset="cpu",
            metrics={"eval/nll": 118.59, "eval/classifier_score": 9.56,
                     "eval/classifier_score_data": 9.64, "eval/classes_hit": 10,
                     "eval/class_kl": 0.0005, "eval/fd": 50.4, "eval/fd_floor": 1.19,
                     "eval/kid": 56.5, "eval/kid_floor": 0.17,
                     "eval/precision": 0.963, "eval/recall": 0.051,
                     "eval/density": 1.433, "eval/coverage": 0.464},
            units={"eval/nll": "nats/example", "eval/class_kl": "nats"},
            command="python -m experiments.bmm_mnist --preset=cpu --workdir=/tmp/bmm_mnist "
                    "--config.data.manual_dir=../shared/data/mnist",
            date="2026-12-07", host="2-core CPU (shared with test runs)",
            wall_time="3 min 34 s",
            notes="60 EM iterations on all 60,000 training images, 2,000 "
                  "Bernoulli components (1,569,999 parameters), 3.3 s an "
                  "iteration beside other jobs (2.6 s alone). `eval/nll` is "
                  "exact, per test example, on each test image's own dynamic "
                  "binarisation (the same as vae_mnist's); 10,000 samples "
                  "(component means) against the test images. The samples' "
                  "precision (0.963, floor 0.857) and recall (0.051, floor "
                  "0.882) show what a mixture of prototypes does: realistic "
                  "images, little variety. Measured beside it (a script on the "
                  "same objective, 40 to 60 iterations): 200 components 130.7 "
                  "nats, 500: 124.4, 1,000: 120.6, 2,000: 118.1."),
    ),
))

if __name__ == "__main__":
    cli.main("bmm_mnist")
