"""A VAE at its best on the cpu budget: importance-weighted training (Burda et
al. 2016) with a VampPrior (Tomczak & Welling 2018), on binarised MNIST.

vae_mnist is the 2013 recipe: one-sample ELBO, N(0, I) prior. This one keeps
its MLP (512-256 units, 32 latents) and changes what the VAE family learned
to change since:

- the training objective is the importance-weighted bound with k = 3
  samples (``vae.importance_samples``), tighter than the ELBO, which trains
  the decoder towards a higher likelihood and keeps more latent units
  active (Burda et al. 2016: 86.76 nats with the ELBO, 85.54 with k = 5,
  one stochastic layer, 3,280 epochs); batches of 256, whose cost the
  prior's 500 pseudo-inputs share;
- the prior is the VampPrior (``model.prior=vamp``): the mixture of the
  encoder's posteriors at 500 learned pseudo-images, which Tomczak & Welling
  report takes a one-layer VAE from 88.56 to 85.57 nats.

Reported as vae_mnist is: ``eval/nll_iwae`` with k = 1000 importance samples
(the prior's density inside each weight), per test example, each test
example binarised with the key of its index. Offline:

    python -m experiments.iwae_mnist --preset=cpu --workdir=/tmp/iwae_mnist \\
        --config.data.manual_dir=../shared/data/mnist

Its measured result is written once, in ``results`` below, from which
README's results table is generated; docs/vae.md sets it beside vae_mnist
and the published numbers.
"""

from experiments import vae_mnist
from genjax import cli, registry
from genjax.tasks import vae

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper.

    vae_mnist's preset of the same name (network, schedule, evaluation) with
    the objective and prior changed; the paper preset starts from vae_mnist's
    cpu network, vae_mnist's own paper preset being the 2013 MLP."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    config = vae_mnist.get_config("cpu" if preset == "paper" else preset)
    config.model.prior = "vamp"
    config.vae.importance_samples = 3
    if preset == "smoke":
        config.model.pseudo_inputs = 10
    elif preset == "cpu":
        config.model.pseudo_inputs = 500
        # Batches of 256: the 500 pseudo-inputs are encoded once a step, so
        # twice the batch costs less than twice the time (measured alone:
        # 8,454 images/s at k = 3 and batch 256, 5,666 at k = 5 and 256,
        # 4,306 at k = 5 and 128). k = 3 over 92 epochs beat k = 5 over 47
        # (batch 128): 84.62 against 85.26 nats.
        config.train.batch_size = 256
        config.train.num_steps = 21_500
        config.train.log_every = 500
        config.train.eval_every = 21_500
        config.train.checkpoint_every = 2000
    else:
        # Burda et al. 2016's schedule: 3^i passes at learning rate
        # 1e-3 * 10^(-i/7), i = 0..7 (3,280 epochs; here cosine over as many
        # steps of 100), Adam beta2 0.999, k = 5 (theirs); Tomczak & Welling's
        # 500 pseudo-inputs.
        config.model.latents = 40
        config.model.pseudo_inputs = 500
        config.vae.importance_samples = 5
        config.train.batch_size = 100
        config.train.num_steps = 3280 * 600
        config.train.min_lr_ratio = 0.01
        config.train.log_every = 1000
        config.train.eval_every = 100_000
        config.train.checkpoint_every = 20_000
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="iwae_mnist",
    family="vae",
    dataset="mnist",
    paper="Burda, Grosse & Salakhutdinov 2016 (IWAE); Tomczak & Welling 2018 (VampPrior)",
    get_config=get_config,
    presets=PRESETS,
    make_task=vae.VAETask,
    results=(
        registry.Result(
            preset="cpu",
            metrics={"eval/nll_iwae": 84.62, "eval/neg_elbo": 89.56, "eval/kl": 23.22},
            units={"eval/nll_iwae": "nats/example", "eval/neg_elbo": "nats/example",
                   "eval/kl": "nats/example"},
            command="python -m experiments.iwae_mnist --preset=cpu "
                    "--workdir=/tmp/iwae_try "
                    "--config.data.manual_dir=../shared/data/mnist",
            date="2026-12-07", host="2-core CPU", wall_time="14 min 12 s",
            notes="Run with this preset's values given as overrides, before they "
                  "became the preset. 21,500 steps of 256 (92 epochs) at 29 "
                  "steps/s, then the k = 1000 bound on the 10,000 test images "
                  "(109 s). Against vae_mnist's 88.16 (the same MLP, the ELBO, "
                  "N(0, I), 85 epochs) and, published, 85.54 for IWAE k = 5 and "
                  "85.57 for the VampPrior, each after 3,280 epochs. The "
                  "previous preset (k = 5, batches of 128, 22,000 steps, 47 "
                  "epochs) reached 85.26 in 14 min 20 s. In the head-to-head's "
                  "protocol (1,000 samples): FD 13.0 against vae_mnist's 54.8, "
                  "classifier score 8.79 against 6.64."),
    ),
))

if __name__ == "__main__":
    cli.main("iwae_mnist")
