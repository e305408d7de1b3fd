"""Score SDEs and flow matching as tasks: trained end to end on digits and
the 2-D toys (tiny configs, offline), every sampler with its number of
network evaluations, the probability-flow ODE likelihood, guidance on an
interval of noise levels, and one-line config errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_one_error_line, read_json, run_cli, set_overrides
from experiments import flow_matching_mnist, score_sde_mnist, score_toy2d
from genjax import data as data_lib
from genjax.objectives import samplers
from genjax.objectives import sde as sde_lib
from genjax.train import loop


def _digits(module, data_dir, **overrides):
    config = module.get_config("smoke")
    return set_overrides(config, {"data.name": "digits", "data.data_dir": str(data_dir),
                                  "eval.batch_size": 60,
                                  "eval.likelihood_num_examples": 6, **overrides})


@pytest.fixture(scope="module")
def score_run(shared_data_dir, tmp_path_factory):
    """A class-conditional VP score SDE on digits, guided on an interval,
    judged with DPM-Solver++ and four more samplers (tests never modify)."""
    workdir = tmp_path_factory.mktemp("score_run") / "wd"
    config = _digits(score_sde_mnist, shared_data_dir, **{
        "model.class_conditional": True, "sample.guidance_scale": 1.0,
        "sample.guidance_interval": (0.1, 20.0),
        "eval.compare_samplers": ("em:4", "pc:2", "heun:3", "adaptive")})
    metrics = loop.train_and_evaluate(config, str(workdir),
                                      score_sde_mnist.EXPERIMENT.make_task)
    return workdir, config, metrics


def test_a_score_sde_run_reports_every_sampler_and_the_ode_likelihood(score_run):
    workdir, _, final = score_run
    saved = read_json(workdir / "eval.json")
    for prefix in ("eval/", "eval/em_4/", "eval/pc_2/", "eval/heun_3/", "eval/adaptive/"):
        for key in ("fd", "classifier_score", "nfe", "sample_seconds"):
            assert np.isfinite(saved[prefix + key]), prefix + key
    # DPM-Solver++ with 5 steps; Euler-Maruyama's 4 and predictor-corrector's
    # 2 x (1 + 1) plus the final denoising; Heun's 2 x 3 - 1.
    assert saved["eval/nfe"] == 5
    assert (saved["eval/em_4/nfe"], saved["eval/pc_2/nfe"], saved["eval/heun_3/nfe"]) == (5, 5, 5)
    assert saved["eval/adaptive/nfe"] > 13  # Tsit5: 6 per step and 1 to start
    # The likelihood: nats of the density in [-1, 1]^64, then bits/dim of the
    # dequantised 8-bit pixels: (nll - 64 ln 2 + 64 ln 256) / (64 ln 2).
    d = 64
    assert saved["eval/bits_per_dim"] == pytest.approx(
        (saved["eval/ode_nll"] - d * math.log(2) + d * math.log(256)) / (d * math.log(2)),
        rel=1e-5)
    assert 0 < saved["eval/bits_per_dim"] < 16 and saved["eval/ode_nfe"] > 13
    assert final["eval/fd"] == saved["eval/fd"]
    assert (workdir / "samples" / "samples_final.png").exists()


def test_guidance_applies_only_inside_its_interval(score_run):
    """Outside ``sample.guidance_interval`` the guided network is the
    conditional one; inside, ``(1 + w) cond - w uncond``."""
    _, config, _ = score_run
    task = score_sde_mnist.EXPERIMENT.make_task(config, data_lib.load_dataset(config.data))

    @jax.jit
    def outputs():
        params = task.init_params(jax.random.key(0), None)
        params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), params)
        x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
        labels = jnp.array([3, 3])
        # sigma~ at t = 0.0005 is ~0.02 (outside), at t = 0.5 ~1.9 (inside).
        t = jnp.array([0.0005, 0.5])
        guided = task.network(params, labels, 1.0)(x, t)
        cond = task.network(params, labels)(x, t)
        uncond = task.network(params, task.null_labels(2))(x, t)
        return guided, cond, uncond

    guided, cond, uncond = outputs()
    np.testing.assert_allclose(guided[0], cond[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(guided[1], 2.0 * cond[1] - uncond[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(cond[1], uncond[1])


def test_flow_matching_trains_samples_and_reflows(
        shared_data_dir, tmp_path):
    # The compared samplers' wiring is score_run's (the same task code).
    config = _digits(flow_matching_mnist, shared_data_dir,
                     **{"eval.compare_samplers": ()})
    final = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                    flow_matching_mnist.EXPERIMENT.make_task)
    assert final["eval/nfe"] == 5 and np.isfinite(final["eval/fd"])
    assert 0 < final["eval/bits_per_dim"] < 16

    # One reflow round (rectified flow): a new run starts from the first
    # run's weights and trains on the pairs its ODE draws.
    reflow = set_overrides(config.copy_and_resolve_references(), {
        "flow_matching.reflow_from": str(tmp_path / "wd"),
        "flow_matching.reflow_sampler": "euler:3", "train.num_steps": 5,
        "train.eval_every": 5, "train.checkpoint_every": 5,
        "eval.sample_quality.num_samples": 0, "eval.likelihood_num_examples": 0})
    make_task = flow_matching_mnist.EXPERIMENT.make_task
    run = loop.build(reflow, str(tmp_path / "reflow"), make_task)
    teacher = run.task.teacher
    start = run.init_state_fn()
    run.checkpointer.close()
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                     teacher, jax.device_get(start.params)))
    batch = {"image": np.zeros((4, 8, 8, 1), np.float32), "label": np.arange(4)}
    noise, image = run.task.reflow_pairs(None, jax.random.key(0), (4, 8, 8, 1))
    x0_fn = run.task.x0_fn(teacher)
    again, _ = samplers.ddim(x0_fn, run.task.path, noise, num_steps=3)
    np.testing.assert_allclose(image, again, rtol=1e-5, atol=1e-5)
    loss, _ = run.task.loss_fn(start.params, batch, jax.random.key(1))
    assert np.isfinite(float(loss))
    after = loop.train_and_evaluate(reflow, str(tmp_path / "reflow"), make_task)
    assert np.isfinite(after["eval/loss"])


def test_sliced_score_matching_trains_the_toy_and_langevin_samples_it(tmp_path):
    """The 2-D toy by sliced score matching: the loss falls and all five
    samplers (annealed Langevin, EM, PC, adaptive ODE, DPM-Solver++) report
    their evaluations; Langevin's are levels x moves + 1."""
    config = set_overrides(score_toy2d.get_config("smoke"), {
        "sde.objective": "ssm", "train.num_steps": 60, "train.log_every": 20,
        "train.eval_every": 60, "train.checkpoint_every": 60,
        "eval.likelihood_num_examples": 20})
    final = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                    score_toy2d.EXPERIMENT.make_task)
    assert final["eval/langevin_5/nfe"] == 5 * config.sde.langevin_steps_per_level + 1
    assert final["eval/em_10/nfe"] == 11 and final["eval/pc_5/nfe"] == 11
    for prefix in ("", "langevin_5/", "em_10/", "pc_5/", "adaptive/"):
        assert np.isfinite(final[f"eval/{prefix}energy_distance"]), prefix
    assert np.isfinite(final["eval/ode_nll"])


def test_sliced_and_denoising_score_matching_differ_by_a_constant():
    """E[SSM(s)] = E[DSM(s)] - C with C independent of s (Vincent 2011; Song
    et al. 2019): for two linear score models on the same perturbed points
    the difference of the two objectives agrees within Monte Carlo error."""
    sde = sde_lib.SDE("ve", sigma_min=0.5, sigma_max=0.5001)
    x0 = jax.random.normal(jax.random.key(0), (200_000, 2)) * jnp.array([[1.0, 0.3]])
    t = jnp.full((x0.shape[0],), 0.5)
    z = jax.random.normal(jax.random.key(1), x0.shape)
    xt = sde_lib.perturb(sde, x0, t, z)
    _, std = sde.marginal(t)
    gaps = []
    for a in (jnp.array([[-0.8, 0.1], [0.0, -2.0]]), jnp.array([[-0.3, 0.0], [0.2, -0.9]])):
        score = lambda x, a=a: x @ a.T  # noqa: E731
        dsm = jnp.mean(jnp.sum((score(xt) + z / std[:, None]) ** 2, axis=1))
        ssm = jnp.mean(sde_lib.sliced_score_matching_loss(score, xt, jax.random.key(2),
                                                          num_projections=4))
        gaps.append(float(0.5 * dsm - ssm))
    assert gaps[0] == pytest.approx(gaps[1], abs=0.05)


@pytest.mark.parametrize("experiment, override, named", [
    ("score_sde_mnist", "--config.sde.kind=edm", "sde.kind='edm'"),
    ("score_sde_mnist", "--config.sample.sampler=langevin", "needs sde.kind='ve'"),
    ("score_sde_mnist", "--config.sde.sample_eps=0.7", "sde.sample_eps=0.7"),
    ("score_sde_mnist", "--config.sde.objective=ism", "sde.objective='ism'"),
    ("flow_matching_mnist", "--config.sample.sampler=em", "sample.sampler='em'"),
    ("flow_matching_mnist", "--config.eval.likelihood_probes=0",
     "eval.likelihood_probes=0"),
    ("flow_matching_mnist", "--config.flow_matching.reflow_from=/nonexistent/run",
     "flow_matching.reflow_from='/nonexistent/run'"),
    ("flow_matching_mnist", "--config.flow_matching.reflow_sampler=em:3",
     "flow_matching.reflow_sampler='em'"),
])
def test_config_mistakes_exit_2_and_write_nothing(experiment, override, named, tmp_path,
                                                  capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, experiment, [
        f"--workdir={workdir}", "--preset=smoke", "--config.data.name=digits", override])
    assert code == 2
    assert_one_error_line(err, named)
    assert not workdir.exists()


def test_the_nfe_table_judges_every_sampler_at_every_budget(score_run, tmp_path, capsys):
    """genjax.tools.nfe on the trained run: one row per sampler and NFE
    (Heun at 2 levels - 1, Euler-Maruyama one short for the denoising
    step, adaptive once), the Markdown table and the plot; a second call
    resumes instead of measuring again."""
    from genjax.tools import nfe

    workdir, _, _ = score_run
    out = tmp_path / "nfe"
    args = [f"score_sde_mnist={workdir}", "--preset=smoke", "--nfe=3",
            "--samplers=dpm2,heun,em,adaptive", "--num_samples=50", f"--out={out}"]
    assert nfe.main(args) == 0
    rows = read_json(out / "nfe.json")
    got = {(r["spec"], r["nfe"]) for r in rows}
    assert got - {("adaptive", r["nfe"]) for r in rows} == {
        ("dpm2:3", 3), ("heun:2", 3), ("em:2", 3)}
    assert len(rows) == 4
    assert all(np.isfinite(r["fd"]) and r["num_samples"] == 50 for r in rows)
    table = (out / "nfe.md").read_text()
    assert "| score_sde_mnist | heun |" in table and "NFE 3" in table
    assert (out / "nfe.png").stat().st_size > 0
    assert nfe.main(args) == 0 and len(read_json(out / "nfe.json")) == len(rows)
    capsys.readouterr()
    assert nfe.main(["nope=/tmp", f"--out={out}"]) == 2
    assert "nope" in capsys.readouterr().err
