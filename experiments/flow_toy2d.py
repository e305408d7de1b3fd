"""Coupling flows on the 2-D toy distributions: RealNVP and neural spline flows.

A stack of ActNorm + coupling layers on 2-D points, trained by exact
maximum likelihood: affine couplings (RealNVP, Dinh et al. 2017) with
``--config.model.coupling=affine``, rational-quadratic spline couplings
(Durkan et al. 2019) with ``spline`` (the default). The distribution is
``eight_gaussians`` by default; ``two_moons``, ``checkerboard`` and
``swiss_roll`` via ``--config.data.name``. Reported: the exact test NLL in
nats per point (``eval/nll``), the energy distance of samples to the test
points beside its floor, mode coverage on labelled sets, and the density
as a heat-map (``samples/density_*.png``).

    python -m experiments.flow_toy2d --workdir=/tmp/flow_toy2d

Its measured results are written once, in ``results`` below, from which
README's results table is generated.
"""

from genjax import cli, registry
from genjax import config as config_lib
from genjax.tasks import flow

PRESETS = ("smoke", "cpu", "paper")


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~1 min), paper."""
    config = flow.base_config("eight_gaussians")
    m = config.model
    m.architecture = "coupling"
    m.coupling = "spline"
    m.num_layers = 8
    m.hidden = 64
    m.num_blocks = 2
    m.num_bins = 8
    m.spline_bound = 4.0
    config.train.batch_size = 256
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    config.eval.batch_size = 1000
    config.sample.num_samples = 2000
    q = config.eval.sample_quality
    q.num_samples, q.num_samples_during_training = 2000, 1000
    q.batch_size = 2000
    if preset == "smoke":
        m.num_layers, m.hidden = 2, 16
        config_lib.smoke_schedule(config)
        config.train.batch_size = 64
        config.train.warmup_steps = 5
        config.eval.batch_size = 50
        config.sample.num_samples = 100
        q.num_samples, q.num_samples_during_training, q.batch_size = 100, 100, 100
    elif preset == "cpu":
        config.train.num_steps = 5000
        config.train.lr_schedule = "cosine"
        config.train.min_lr_ratio = 0.05
        config.train.log_every = 250
        config.train.eval_every = 2500
        config.train.checkpoint_every = 1000
    elif preset == "paper":
        # Durkan et al. 2019 on 2-D toys: more layers, bins and steps.
        m.num_layers = 10
        m.hidden = 128
        m.num_bins = 16
        config.train.num_steps = 50_000
        config.train.lr_schedule = "cosine"
        config.train.log_every = 1000
        config.train.eval_every = 10_000
        config.train.checkpoint_every = 5000
    else:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return config


EXPERIMENT = registry.register(registry.Experiment(
    name="flow_toy2d",
    family="flow",
    dataset="eight_gaussians",
    paper="Dinh, Sohl-Dickstein & Bengio 2017 (RealNVP); Durkan et al. 2019 (neural spline flows)",
    get_config=get_config,
    presets=PRESETS,
    make_task=flow.FlowTask,
    results=(
        registry.Result(
            preset="cpu",
            summary="eight_gaussians, spline couplings",
            metrics={"eval/nll": 1.000, "eval/energy_distance": 0.0021,
                     "eval/energy_distance_floor": 0.0012, "eval/classes_hit": 8,
                     "eval/class_kl": 0.0021},
            units={"eval/nll": "nats/point", "eval/class_kl": "nats"},
            command="python -m experiments.flow_toy2d --workdir=/tmp/flow_toy2d",
            date="2026-12-06", host="2-core CPU", wall_time="45.8 s",
            notes="5,000 steps of 256; 8 spline couplings (8 bins on [-4, 4], "
                  "64-unit networks of 2 layers), each after an ActNorm. "
                  "`eval/nll` is the exact test NLL in nats per standardised "
                  "point over the 10,000 test points (the mixture's entropy is "
                  "about 0.986); 2,000 samples "
                  "against 2,000 test points. With "
                  "`--config.model.coupling=affine` (RealNVP's couplings, the "
                  "same network): "
                  "`eval/nll` 1.220, `eval/energy_distance` 0.0025, 8 modes hit, class KL 0.0054, in 17 to 18 s."),
        registry.Result(
            preset="cpu",
            summary="two_moons, spline couplings",
            metrics={"eval/nll": 1.681, "eval/energy_distance": 0.0039,
                     "eval/energy_distance_floor": 0.0024, "eval/classes_hit": 2,
                     "eval/class_kl": 0.0005},
            units={"eval/nll": "nats/point", "eval/class_kl": "nats"},
            command="python -m experiments.flow_toy2d --workdir=/tmp/flow_toy2d "
                    "--config.data.name=two_moons",
            date="2026-12-06", host="2-core CPU", wall_time="45.0 s",
            notes="5,000 steps of 256; 8 spline couplings (8 bins on [-4, 4], "
                  "64-unit networks of 2 layers), each after an ActNorm. "
                  "`eval/nll` is the exact test NLL in nats per standardised "
                  "point over the 10,000 test points; 2,000 samples "
                  "against 2,000 test points. With "
                  "`--config.model.coupling=affine` (RealNVP's couplings, the "
                  "same network): "
                  "`eval/nll` 1.692, `eval/energy_distance` 0.0057, both moons hit, in 17 to 18 s."),
        registry.Result(
            preset="cpu",
            summary="checkerboard, spline couplings",
            metrics={"eval/nll": 1.844, "eval/energy_distance": 0.0022,
                     "eval/energy_distance_floor": 0.0007},
            units={"eval/nll": "nats/point"},
            command="python -m experiments.flow_toy2d --workdir=/tmp/flow_toy2d "
                    "--config.data.name=checkerboard",
            date="2026-12-06", host="2-core CPU", wall_time="46.9 s",
            notes="5,000 steps of 256; 8 spline couplings (8 bins on [-4, 4], "
                  "64-unit networks of 2 layers), each after an ActNorm. "
                  "`eval/nll` is the exact test NLL in nats per standardised "
                  "point over the 10,000 test points (the distribution's "
                  "entropy is 1.794); 2,000 samples "
                  "against 2,000 test points. With "
                  "`--config.model.coupling=affine` (RealNVP's couplings, the "
                  "same network): "
                  "`eval/nll` 1.957, `eval/energy_distance` 0.0023, in 17 to 18 s."),
    ),
))

if __name__ == "__main__":
    cli.main("flow_toy2d")
