"""EM for Gaussian and Bernoulli mixtures: densities against direct
formulas, M-steps against closed forms, the log-likelihood monotone per
iteration, the sharded E-step, and the task in the loop."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_digits

from conftest import (assert_one_error_line, read_json, read_jsonl, run_cli,
                      run_python, set_overrides)
from experiments import bmm_mnist, gmm_mnist
from genjax.models import mixture
from genjax.objectives import em
from genjax.train import loop


def _digits_pixels(dequantise: bool) -> jnp.ndarray:
    x = load_digits().data.astype(np.float32) / 16.0
    if dequantise:
        u = np.random.default_rng(0).uniform(size=x.shape)
        x = (np.round(x * 255) + u) / 256
    return jnp.asarray(x, jnp.float32)


def _random_gaussian_params(rng, k, d, covariance):
    means = rng.normal(size=(k, d))
    params = {"logits": rng.normal(size=(k,)), "means": means}
    if covariance == "diag":
        params["variances"] = rng.uniform(0.2, 2.0, size=(k, d))
    else:
        a = rng.normal(size=(k, d, d))
        cov = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
        values, vectors = np.linalg.eigh(cov)
        params["eigenvectors"], params["eigenvalues"] = vectors, values
    return {key: jnp.asarray(v, jnp.float32) for key, v in params.items()}


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gaussian_mixture_density_matches_scipy(covariance):
    rng = np.random.default_rng(0)
    params = _random_gaussian_params(rng, 3, 4, covariance)
    x = rng.normal(size=(7, 4))
    got = np.asarray(mixture.log_prob(params, jnp.asarray(x, jnp.float32)))
    weights = np.asarray(jax.nn.softmax(params["logits"]))
    cov = np.asarray(mixture.covariances(params), np.float64)
    want = np.log(sum(
        weights[k] * stats.multivariate_normal(
            np.asarray(params["means"][k]),
            np.diag(cov[k]) if covariance == "diag" else cov[k]).pdf(x)
        for k in range(3)))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_bernoulli_mixture_density_by_hand():
    # Two components over two pixels, weights 1/4 and 3/4:
    # p(1, 0) = 1/4 * 0.9 * 0.8 + 3/4 * 0.3 * 0.5 = 0.18 + 0.1125.
    params = {"logits": jnp.log(jnp.array([0.25, 0.75])),
              "probs": jnp.array([[0.9, 0.2], [0.3, 0.5]])}
    got = mixture.log_prob(params, jnp.array([[1.0, 0.0]]))
    assert float(got[0]) == pytest.approx(math.log(0.2925), rel=1e-6)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_the_m_step_is_the_weighted_maximum_likelihood_estimate(covariance):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    resp = rng.dirichlet(np.ones(2), size=50).astype(np.float32)
    # Centres far from the answer: the second moments are re-centred exactly.
    centres = rng.normal(size=(2, 3)).astype(np.float32) * 3
    st = em.sufficient_statistics(jnp.asarray(resp), jnp.asarray(x), jnp.asarray(centres),
                                  covariance)
    new = em.m_step(st, "gaussian", covariance, min_variance=1e-6, min_prob=1e-4)
    for k in range(2):
        r = resp[:, k].astype(np.float64)
        mean = (r[:, None] * x).sum(0) / r.sum()
        cov = ((x - mean).T * r) @ (x - mean) / r.sum()
        np.testing.assert_allclose(new["means"][k], mean, rtol=1e-5, atol=1e-6)
        got = np.asarray(mixture.covariances(new))[k]
        np.testing.assert_allclose(got, np.diag(cov) if covariance == "diag" else cov,
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jax.nn.softmax(new["logits"]), resp.mean(0), rtol=1e-5)


def test_the_m_step_bounds_keep_the_likelihood_finite():
    # A component on one repeated point has zero variance: the floor holds
    # it at min_variance; a pixel never on gets min_prob, not 0.
    x = jnp.zeros((4, 2))
    resp = jnp.ones((4, 1))
    st = em.sufficient_statistics(resp, x, jnp.zeros((1, 2)), "full")
    new = em.m_step(st, "gaussian", "full", min_variance=1e-3, min_prob=1e-4)
    np.testing.assert_allclose(new["eigenvalues"], 1e-3)
    probs = em.m_step(em.sufficient_statistics(resp, x, None, ""), "bernoulli", "",
                      min_variance=1e-3, min_prob=1e-4)["probs"]
    np.testing.assert_allclose(probs, 1e-4)


@pytest.mark.parametrize("distribution,covariance", [
    ("bernoulli", ""), ("gaussian", "diag"), ("gaussian", "full")])
def test_em_never_lowers_the_log_likelihood(distribution, covariance):
    """Batch EM on a fixed data set (the 1,797 digits): after the k-means
    start, every iteration's log-likelihood is at least the previous one's
    (to float32 rounding), and it climbs a long way."""
    x = _digits_pixels(dequantise=distribution == "gaussian")
    params = mixture.init_params(jax.random.key(0), distribution, covariance or "diag",
                                 8, x.shape[1])
    step = jax.jit(lambda p, i: em.em_step(p, x, jax.random.key(1), initialise=i == 0,
                                           min_variance=1e-6, min_prob=1e-4))
    lls = []
    for i in range(16):
        params, metrics = step(params, i)
        lls.append(float(metrics["log_likelihood"]))
    final = float(jnp.mean(mixture.log_prob(params, x)))
    lls = np.array(lls[1:] + [final])
    steps = np.diff(lls)
    assert np.all(steps >= -2e-5 * np.abs(lls[1:])), steps
    assert lls[-1] - lls[0] > 0.5 and float(metrics["empty_components"]) == 0


def test_the_first_step_starts_from_distinct_examples():
    x = _digits_pixels(dequantise=False)
    resp = em.kmeans_responsibilities(jax.random.key(3), x, 10)
    assert resp.shape == (len(x), 10)
    np.testing.assert_array_equal(resp.sum(1), 1.0)
    assert int((resp.sum(0) > 0).sum()) == 10  # each centre owns itself


def test_samples_follow_the_mixture():
    rng = np.random.default_rng(2)
    params = _random_gaussian_params(rng, 2, 3, "full")
    params["logits"] = jnp.log(jnp.array([0.3, 0.7]))
    x, comp = mixture.sample(params, jax.random.key(0), 40_000)
    assert abs(float(jnp.mean(comp == 1)) - 0.7) < 0.01
    cov = np.asarray(mixture.covariances(params))
    for k in range(2):
        chosen = np.asarray(x)[np.asarray(comp) == k]
        np.testing.assert_allclose(np.cov(chosen.T), cov[k], atol=0.15 * np.abs(cov[k]).max())
        np.testing.assert_allclose(chosen.mean(0), params["means"][k], atol=0.1)
    probs = {"logits": jnp.zeros(1), "probs": jnp.array([[0.1, 0.9]])}
    bits, _ = mixture.sample(probs, jax.random.key(1), 20_000)
    np.testing.assert_allclose(bits.mean(0), [0.1, 0.9], atol=0.01)
    means, _ = mixture.sample(probs, jax.random.key(1), 3, mean_only=True)
    np.testing.assert_allclose(means, [[0.1, 0.9]] * 3)


_SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from sklearn.datasets import load_digits
from genjax.models import mixture
from genjax.objectives import em
assert jax.device_count() == 8
x = jnp.asarray(load_digits().data[:1792] / 16.0, jnp.float32)
mesh = Mesh(np.array(jax.devices()), ("data",))
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
assert len(xs.sharding.device_set) == 8
import threadpoolctl
from genjax.train import step
assert step.single_thread_lapack(mesh)  # as run.build does on this mesh
assert not step.single_thread_lapack(Mesh(np.array(jax.devices()[:1]), ("data",)))
threads = {lib.filepath: lib.num_threads
           for lib in threadpoolctl.ThreadpoolController().lib_controllers}
assert [n for path, n in threads.items() if "scipy" in path and "numpy" not in path] == [1], threads
for cov in ("diag", "full"):
    p = mixture.init_params(jax.random.key(0), "gaussian", cov, 5, 64)
    def run(data):
        f = jax.jit(lambda p, i: em.em_step(p, data, jax.random.key(1), initialise=i == 0,
                                            min_variance=1e-6, min_prob=1e-4))
        q = p
        for i in range(4):
            q, m = f(q, i)
        return q, m
    one, m1 = run(jax.device_put(x, jax.devices()[0]))
    eight, m8 = run(xs)
    for key in one:
        np.testing.assert_allclose(one[key], eight[key], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(m1["log_likelihood"], m8["log_likelihood"], rtol=1e-5)
print("same on 8 devices")
"""


@pytest.mark.subprocess
def test_the_sharded_em_step_gives_the_single_device_answer():
    proc = run_python(["-c", _SHARDED], devices=8, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same on 8 devices" in proc.stdout


def _digits_config(module, data_dir, **overrides):
    config = module.get_config("smoke")
    return set_overrides(config, {
        "data.name": "digits", "data.data_dir": str(data_dir),
        "train.batch_size": 1437, "model.components": 6, "train.num_steps": 6,
        "eval.batch_size": 60, **overrides})


@pytest.mark.parametrize("module", [bmm_mnist, gmm_mnist])
def test_a_mixture_trains_in_the_loop_with_exact_batch_em(module, shared_data_dir, tmp_path):
    """Every step is an EM iteration on all 1,437 training digits: the
    logged NLL never rises after the start, and the run evaluates, samples
    and draws its components like any family."""
    workdir = tmp_path / "wd"
    config = _digits_config(module, shared_data_dir)
    final = loop.train_and_evaluate(config, str(workdir), module.EXPERIMENT.make_task)
    losses = [row["train/loss"] for row in read_jsonl(workdir / "metrics.jsonl")
              if "train/loss" in row]
    assert len(losses) == 6
    assert all(b <= a + 2e-5 * abs(a) for a, b in zip(losses[1:], losses[2:])), losses
    assert np.isfinite(final["eval/nll"]) and final["eval/bits_per_dim"] > 0
    assert final["eval/classes_hit"] >= 1 and np.isfinite(final["eval/fd"])
    assert (workdir / "samples" / "components_final.png").is_file()
    assert read_json(workdir / "eval.json")["eval/nll"] == final["eval/nll"]


def test_the_gaussian_likelihood_counts_the_logit_jacobian(shared_data_dir):
    """The logit-space mixture's likelihood of the pixels equals the
    mixture density of the logits times the transform's Jacobian, by a
    direct computation."""
    config = _digits_config(gmm_mnist, shared_data_dir)
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    dataset = data_lib.load_dataset(config.data)
    task = gmm_mnist.EXPERIMENT.make_task(config, dataset)
    rng = np.random.default_rng(0)
    params = _random_gaussian_params(rng, 2, 64, "diag")
    images = dataset.arrays("test")["image"][:3]
    key = jax.random.key(4)
    got = task.log_likelihood(params, jnp.asarray(images), key)
    x = np.asarray(task.test_pixels(jnp.asarray(images), key)[0], np.float64)  # logits
    pixels = 1 / (1 + np.exp(-x))  # = alpha + (1 - 2 alpha) u, alpha = 1e-6
    log_det = np.sum(np.log(1 - 2e-6) - np.log(pixels) - np.log1p(-pixels), axis=1)
    density = np.asarray(mixture.log_prob(params, jnp.asarray(x, jnp.float32)), np.float64)
    want = density + log_det - 64 * math.log(256)
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("override,named", [
    ("--config.model.distribution=poisson", "model.distribution='poisson'"),
    ("--config.model.covariance=tied", "model.covariance='tied'"),
    ("--config.model.components=0", "model.components=0"),
    ("--config.model.components=600", "model.components=600"),
    ("--config.em.min_prob=0.5", "em.min_prob=0.5"),
    ("--config.model.logit_alpha=0.5", "model.logit_alpha=0.5"),
    ("--config.train.ema_decay=0.99", "train.ema_decay=0.99"),
])
def test_config_mistakes_exit_2_and_write_nothing(override, named, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "gmm_mnist", [
        f"--workdir={workdir}", "--preset=smoke", "--config.data.name=digits", override])
    assert code == 2
    assert_one_error_line(err, named)
    assert not workdir.exists()
