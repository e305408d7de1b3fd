"""The formulas of genjax.objectives.elbo against independent computations.

References are computed in float64 with numpy / scipy (closed forms,
quadrature, Monte Carlo); genjax computes in float32, hence the tolerances.
Statistical checks use fixed seeds and bounds of several standard errors, so
they are deterministic and would fail on a real error of the size they test.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, special, stats

from genjax.objectives import elbo, likelihood

from conftest import digits_config

# --------------------------------------------------------------------------
# A small random model: 4x4x1 binary images, 2 latents, a tanh decoder.

H, W, C, LATENTS, HIDDEN = 4, 4, 1, 2, 8
D = H * W * C


def _model_weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "we": (rng.normal(size=(D, 2 * LATENTS)) * 0.4).astype(np.float32),
        "be": (rng.normal(size=(2 * LATENTS,)) * 0.1).astype(np.float32),
        "w1": (rng.normal(size=(LATENTS, HIDDEN)) * 1.5).astype(np.float32),
        "b1": (rng.normal(size=(HIDDEN,)) * 0.5).astype(np.float32),
        "w2": (rng.normal(size=(HIDDEN, D)) * 1.5).astype(np.float32),
        "b2": (rng.normal(size=(D,)) * 0.5).astype(np.float32),
    }


WEIGHTS = _model_weights()


def encode(x, xp=jnp, w=WEIGHTS):
    h = x.reshape(x.shape[0], -1) @ w["we"] + w["be"][None]
    # logvar in (-1, 0.6): q is narrower than the prior but not degenerate.
    return h[:, :LATENTS], 0.8 * xp.tanh(h[:, LATENTS:]) - 0.2


def decode(z, xp=jnp, w=WEIGHTS):
    h = xp.tanh(z @ w["w1"] + w["b1"][None])
    return (h @ w["w2"] + w["b2"][None]).reshape(z.shape[0], H, W, C)


def np_encode(x):
    w64 = {k: v.astype(np.float64) for k, v in WEIGHTS.items()}
    return encode(np.asarray(x, np.float64), np, w64)


def np_decode(z):
    w64 = {k: v.astype(np.float64) for k, v in WEIGHTS.items()}
    return decode(np.asarray(z, np.float64), np, w64)


def binary_images(n, seed=1):
    rng = np.random.default_rng(seed)
    # Pixels with different on-probabilities, so the examples differ.
    probs = rng.uniform(0.1, 0.9, size=(1, H, W, C))
    return (rng.uniform(size=(n, H, W, C)) < probs).astype(np.float32)


def np_bernoulli_log_prob(logits, x):
    """Summed over pixels, with scipy's stable log-sigmoid."""
    lp = x * special.log_expit(logits) + (1 - x) * special.log_expit(-logits)
    return lp.reshape(lp.shape[0], -1).sum(-1)


def np_log_weights(x, eps):
    """log p(x, z) - log q(z | x) for z = mean + std * eps; eps ``[k, B, L]``."""
    mean, logvar = np_encode(x)
    std = np.exp(0.5 * logvar)
    z = mean[None] + std[None] * eps                       # [k, B, L]
    k, b = eps.shape[:2]
    logits = np_decode(z.reshape(k * b, LATENTS))
    x_rep = np.broadcast_to(x, (k,) + x.shape).reshape((k * b,) + x.shape[1:])
    log_px_z = np_bernoulli_log_prob(logits, x_rep).reshape(k, b)
    log_pz = stats.norm.logpdf(z).sum(-1)
    log_qz = stats.norm.logpdf(z, mean[None], std[None]).sum(-1)
    return log_px_z + log_pz - log_qz


def exact_nll(x):
    """-log p(x) by quadrature over the 2-D latent space (float64)."""
    grid = np.linspace(-7.0, 7.0, 561)
    step = grid[1] - grid[0]
    z1, z2 = np.meshgrid(grid, grid, indexing="ij")
    z = np.stack([z1.ravel(), z2.ravel()], axis=-1)        # [G, 2]
    logits = np_decode(z)                                  # [G, H, W, C]
    log_prior = stats.norm.logpdf(z).sum(-1)               # [G]
    out = []
    for row in np.asarray(x, np.float64):
        lp = np_bernoulli_log_prob(logits, np.broadcast_to(row, logits.shape))
        out.append(-(special.logsumexp(lp + log_prior) + 2 * math.log(step)))
    return np.asarray(out)


# --------------------------------------------------------------------------
# Closed forms and densities.


def test_gaussian_kl_matches_1d_closed_form_and_quadrature():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(5, 3)).astype(np.float32) * 2.0
    logvar = rng.uniform(-3.0, 2.0, size=(5, 3)).astype(np.float32)
    got = np.asarray(elbo.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    assert got.shape == (5,)

    m, s = mean.astype(np.float64), np.exp(0.5 * logvar.astype(np.float64))
    # KL(N(m, s^2) || N(0, 1)) per dimension, then summed.
    closed = (np.log(1.0 / s) + (s**2 + m**2) / 2.0 - 0.5).sum(-1)
    np.testing.assert_allclose(got, closed, rtol=1e-5, atol=1e-5)

    # The same for one pair by numerical integration of q log(q/p).
    mi, si = float(m[0, 0]), float(s[0, 0])
    integrand = lambda z: stats.norm.pdf(z, mi, si) * (  # noqa: E731
        stats.norm.logpdf(z, mi, si) - stats.norm.logpdf(z))
    quad, _ = integrate.quad(integrand, mi - 12 * si, mi + 12 * si)
    one = float(elbo.gaussian_kl(jnp.asarray(mean[:1, :1]), jnp.asarray(logvar[:1, :1]))[0])
    assert one == pytest.approx(quad, rel=1e-5, abs=1e-6)


def test_gaussian_kl_matches_monte_carlo():
    mean = np.array([0.7, -1.2, 0.1], np.float32)
    logvar = np.array([-1.0, 0.5, -2.5], np.float32)
    kl = float(elbo.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    std = np.exp(0.5 * logvar.astype(np.float64))
    z = mean + std * np.random.default_rng(1).standard_normal((400_000, 3))
    diffs = (stats.norm.logpdf(z, mean, std) - stats.norm.logpdf(z)).sum(-1)
    estimate, se = diffs.mean(), diffs.std(ddof=1) / math.sqrt(len(diffs))
    assert abs(kl - estimate) < 5 * se, (kl, estimate, se)
    assert se < 0.01 * kl  # the check above is tight.
    # Zero exactly at the prior.
    assert float(elbo.gaussian_kl(jnp.zeros(3), jnp.zeros(3))) == 0.0


def test_bernoulli_log_prob_matches_scipy():
    rng = np.random.default_rng(2)
    logits = rng.uniform(-6, 6, size=(3, 4, 4, 2)).astype(np.float32)
    x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
    got = np.asarray(elbo.bernoulli_log_prob(jnp.asarray(logits), jnp.asarray(x)))
    assert got.shape == (3,)
    expected = stats.bernoulli.logpmf(x, special.expit(logits.astype(np.float64)))
    np.testing.assert_allclose(got, expected.reshape(3, -1).sum(-1), rtol=1e-5)

    # Saturated logits stay finite and exact (scipy's pmf would give -inf).
    big = np.array([[40.0, -40.0, 40.0, -40.0]], np.float32).reshape(1, 2, 2, 1)
    xb = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32).reshape(1, 2, 2, 1)
    got_big = np.asarray(elbo.bernoulli_log_prob(jnp.asarray(big), jnp.asarray(xb)))
    np.testing.assert_allclose(got_big, np_bernoulli_log_prob(big.astype(np.float64), xb),
                               rtol=1e-6)
    assert got_big[0] == pytest.approx(-80.0, rel=1e-6)


def test_gaussian_log_prob_matches_scipy_with_floored_scale():
    rng = np.random.default_rng(3)
    b, c = 2, 3
    mean = rng.uniform(0, 1, size=(b, 3, 3, c)).astype(np.float32)
    log_scale = rng.uniform(-7.0, 0.0, size=(b, 3, 3, c)).astype(np.float32)
    assert (log_scale < elbo.MIN_LOG_SCALE).any()  # the floor matters here.
    x = (mean + rng.normal(size=mean.shape) * 0.05).astype(np.float32)
    out = np.concatenate([mean, log_scale], axis=-1)  # means, then log-scales.
    got = np.asarray(elbo.gaussian_log_prob(jnp.asarray(out), jnp.asarray(x)))
    scale = np.exp(np.maximum(log_scale.astype(np.float64), elbo.MIN_LOG_SCALE))
    expected = stats.norm.logpdf(x, mean, scale).reshape(b, -1).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_diag_and_standard_normal_log_prob_match_multivariate_normal():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(6, 5)).astype(np.float32)
    mean = rng.normal(size=(6, 5)).astype(np.float32)
    logvar = rng.uniform(-2, 2, size=(6, 5)).astype(np.float32)
    got = np.asarray(elbo.diag_gaussian_log_prob(
        jnp.asarray(z), jnp.asarray(mean), jnp.asarray(logvar)))
    got_std = np.asarray(elbo.standard_normal_log_prob(jnp.asarray(z)))
    for i in range(6):
        cov = np.diag(np.exp(logvar[i].astype(np.float64)))
        assert got[i] == pytest.approx(
            stats.multivariate_normal(mean[i], cov).logpdf(z[i]), rel=1e-5)
        assert got_std[i] == pytest.approx(
            stats.multivariate_normal(np.zeros(5), np.eye(5)).logpdf(z[i]), rel=1e-5)


def test_bits_per_dim_by_hand():
    """One convention (genjax.objectives.likelihood): discrete NLL / (D ln 2);
    a density on [0, 1]^D first gains D ln 256, the log-volume of a bin."""
    nll = jnp.asarray([100.0, 0.0])
    discrete = np.asarray(likelihood.bits_per_dim(nll, 784))
    np.testing.assert_allclose(discrete, [100.0 / (784 * math.log(2.0)), 0.0],
                               rtol=1e-6)
    gauss = np.asarray(likelihood.bits_per_dim(
        likelihood.density_to_discrete_nll(nll, 784), 784))
    # A continuous density on [0, 1]^D: each 8-bit bin has width 1/256, so
    # the uniform density (0 nats) is exactly 8 bits per dimension.
    np.testing.assert_allclose(
        gauss, [(100.0 + 784 * math.log(256.0)) / (784 * math.log(2.0)), 8.0],
        rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(likelihood.nats_from_bits_per_dim(discrete, 784)), nll,
        rtol=1e-6)


def test_uniform_dequantize_stays_in_the_pixels_bin():
    x = jnp.arange(256, dtype=jnp.float32) / 255.0
    y = np.asarray(likelihood.uniform_dequantize(x, jax.random.key(0)))
    k = np.arange(256)
    assert np.all(y >= k / 256.0) and np.all(y < (k + 1) / 256.0)


# --------------------------------------------------------------------------
# The IWAE bound.


def _neg_elbo(x, key):
    return elbo.neg_elbo(encode, decode, x, key, "bernoulli")[0]


def _nll_iwae(x, key, k, chunk):
    return elbo.nll_iwae(encode, decode, x, key, "bernoulli", k, chunk)


def test_iwae_k1_is_the_one_sample_elbo_with_sampled_kl():
    """Exactly, on the draw the implementation makes (its key path)."""
    x = binary_images(5)
    rng = jax.random.key(7)
    got = np.asarray(_nll_iwae(jnp.asarray(x), rng, 1, 100))
    # nll_iwae draws chunk i with split(rng, num_chunks)[i]; here one chunk.
    eps = np.asarray(jax.random.normal(jax.random.split(rng, 1)[0],
                                       (1, 5, LATENTS)), np.float64)
    mean, logvar = np_encode(x)
    z = mean + np.exp(0.5 * logvar) * eps[0]
    rec_nll = -np_bernoulli_log_prob(np_decode(z), x)
    sampled_kl = (stats.norm.logpdf(z, mean, np.exp(0.5 * logvar))
                  - stats.norm.logpdf(z)).sum(-1)
    np.testing.assert_allclose(got, rec_nll + sampled_kl, rtol=1e-5)


def test_iwae_chunks_combine_exactly():
    """k=100 in 5 chunks of 20 is the log-mean-exp of those 100 draws."""
    x = binary_images(4)
    rng = jax.random.key(11)
    got = np.asarray(_nll_iwae(jnp.asarray(x), rng, 100, 20))
    keys = jax.random.split(rng, 5)
    lw = np.concatenate([
        np_log_weights(x, np.asarray(jax.random.normal(k, (20, 4, LATENTS)), np.float64))
        for k in keys])
    expected = -(special.logsumexp(lw, axis=0) - math.log(100))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of the chunk"):
        _nll_iwae(jnp.asarray(x), rng, 100, 30)


def test_the_iwae_training_gradient_weights_each_sample_by_its_normalised_weight():
    """Burda et al. 2016, eq. 14: the gradient of -IWAE_k is minus the sum,
    over the k samples, of each normalised importance weight times the
    gradient of that sample's log weight (the noise held fixed)."""
    x = jnp.asarray(binary_images(3))
    rng, k = jax.random.key(5), 4
    eps = jax.random.normal(jax.random.split(rng, 1)[0], (k, 3, LATENTS))

    def loss(w):
        return jnp.sum(elbo.neg_iwae(lambda v: encode(v, w=w), lambda z: decode(z, w=w),
                                     x, rng, "bernoulli", k))

    def log_weights(w):  # [k, B], the same draws
        mean, logvar = encode(x, w=w)
        z = mean[None] + jnp.exp(0.5 * logvar[None]) * eps
        out = decode(z.reshape(k * 3, LATENTS), w=w)
        x_rep = jnp.broadcast_to(x, (k,) + x.shape).reshape((k * 3,) + x.shape[1:])
        return (elbo.bernoulli_log_prob(out, x_rep).reshape(k, 3)
                + elbo.standard_normal_log_prob(z)
                - elbo.diag_gaussian_log_prob(z, mean[None], logvar[None]))

    weights = jax.nn.softmax(log_weights(WEIGHTS), axis=0)       # [k, B]
    jacobian = jax.jacobian(log_weights)(WEIGHTS)                 # [k, B, ...]
    expected = jax.tree.map(
        lambda j: -jnp.einsum("kb,kb...->...", weights, j), jacobian)
    got = jax.grad(loss)(WEIGHTS)
    for name in WEIGHTS:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(expected[name]),
                                   rtol=2e-4, atol=1e-5)
    # k = 1 is the one-sample ELBO with a sampled KL: the same number as
    # the k = 1 bound.
    np.testing.assert_allclose(
        np.asarray(elbo.neg_iwae(encode, decode, x, rng, "bernoulli", 1)),
        np.asarray(_nll_iwae(x, rng, 1, 1)), rtol=1e-6)


def test_the_vampprior_density_is_the_mixture_of_its_components():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 3)) * 2.0
    means = rng.normal(size=(5, 3))
    logvars = rng.normal(size=(5, 3)) * 0.5
    got = np.asarray(elbo.mixture_log_prob(jnp.asarray(z, jnp.float32),
                                           jnp.asarray(means, jnp.float32),
                                           jnp.asarray(logvars, jnp.float32)))
    per_component = np.stack([
        stats.multivariate_normal(means[k], np.diag(np.exp(logvars[k]))).logpdf(z)
        for k in range(5)], axis=1)
    want = special.logsumexp(per_component, axis=1) - math.log(5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_prior_of_one_standard_component_gives_the_standard_bounds():
    """The learned-prior path (sampled KL, the prior's density inside the
    importance weights) with p(z) = N(0, I) written as a one-component
    mixture: the same IWAE bound on the same draws, and the ELBO in
    expectation."""
    x = jnp.asarray(binary_images(4))
    rng = jax.random.key(9)
    standard = lambda z: elbo.mixture_log_prob(  # noqa: E731
        z, jnp.zeros((1, LATENTS)), jnp.zeros((1, LATENTS)))
    np.testing.assert_allclose(
        np.asarray(elbo.nll_iwae(encode, decode, x, rng, "bernoulli", 40, 20,
                                 log_prior=standard)),
        np.asarray(_nll_iwae(x, rng, 40, 20)), rtol=1e-5)
    keys = jax.random.split(rng, 2000)
    sampled = jax.vmap(lambda k: elbo.neg_elbo(encode, decode, x, k, "bernoulli",
                                               standard)[0])(keys)
    analytic = jax.vmap(lambda k: elbo.neg_elbo(encode, decode, x, k, "bernoulli")[0])(keys)
    diff = np.asarray(sampled - analytic, np.float64)  # the KL estimate's noise
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(diff.size)


@pytest.fixture(scope="module")
def iwae_draws():
    """Per key and example: neg ELBO (analytic KL) and -IWAE_k for k=1,10,100
    with two chunkings, over 300 keys."""
    x = jnp.asarray(binary_images(6))
    keys = jax.random.split(jax.random.key(3), 300)

    def per_key(key):
        k0, k1, k10, k100, k100b = jax.random.split(key, 5)
        return {
            "neg_elbo": _neg_elbo(x, k0),
            "k1": _nll_iwae(x, k1, 1, 1),
            "k10": _nll_iwae(x, k10, 10, 10),
            "k100": _nll_iwae(x, k100, 100, 100),
            "k100_chunk10": _nll_iwae(x, k100b, 100, 10),
        }

    out = jax.jit(jax.vmap(per_key))(keys)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}, np.asarray(x)


def _mean_se(values):
    """Mean over keys and examples; the standard error over keys."""
    per_key = values.mean(axis=1)
    return per_key.mean(), per_key.std(ddof=1) / math.sqrt(len(per_key))


def test_iwae_k1_matches_neg_elbo_in_expectation(iwae_draws):
    draws, _ = iwae_draws
    m1, se1 = _mean_se(draws["k1"])
    me, see = _mean_se(draws["neg_elbo"])
    # E[log q - log p] is the analytic KL: the two estimate the same number.
    assert abs(m1 - me) < 4 * math.hypot(se1, see), (m1, me, se1, see)


def test_iwae_decreases_with_k_towards_exact_nll(iwae_draws):
    draws, x = iwae_draws
    me, see = _mean_se(draws["neg_elbo"])
    m1, se1 = _mean_se(draws["k1"])
    m10, se10 = _mean_se(draws["k10"])
    m100, se100 = _mean_se(draws["k100"])
    nll = exact_nll(x).mean()
    # Non-increasing in k, each step by more than 4 standard errors, and
    # every bound above the exact -log p(x) from quadrature.
    assert m1 - m10 > 4 * math.hypot(se1, se10), (m1, m10)
    assert m10 - m100 > 4 * math.hypot(se10, se100), (m10, m100)
    assert me - m10 > 4 * math.hypot(see, se10), (me, m10)
    assert m100 > nll - 4 * se100, (m100, nll)
    assert m100 - nll < 0.5 * (m1 - nll)  # k = 100 closes most of the gap.
    # Per example too (means over keys).
    per_example = {k: draws[k].mean(axis=0) for k in ("k1", "k10", "k100")}
    assert (per_example["k1"] > per_example["k10"]).all()
    assert (per_example["k10"] > per_example["k100"]).all()
    assert (per_example["k100"] > exact_nll(x) - 0.05).all()


def test_iwae_chunking_does_not_change_the_estimate(iwae_draws):
    """Chunk size changes which draws are made, not the estimator: the same
    mean over keys within 4 standard errors."""
    draws, _ = iwae_draws
    m, se = _mean_se(draws["k100"])
    mc, sec = _mean_se(draws["k100_chunk10"])
    assert abs(m - mc) < 4 * math.hypot(se, sec), (m, mc, se, sec)
    assert not np.array_equal(draws["k100"], draws["k100_chunk10"])


# --------------------------------------------------------------------------
# Anomaly score.


def test_anomaly_score_is_the_mean_neg_elbo_over_its_draws():
    x = jnp.asarray(binary_images(3))
    rng = jax.random.key(5)
    got = np.asarray(elbo.anomaly_score(encode, decode, x, rng, "bernoulli", 8))
    each = [np.asarray(_neg_elbo(x, k)) for k in jax.random.split(rng, 8)]
    np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-6)


def test_anomaly_score_ranks_noise_above_digits():
    """A VAE trained 300 steps on digits scores noise images higher."""
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from genjax.tasks.vae import VAETask  # pylint: disable=import-outside-toplevel

    config = digits_config("smoke")
    dataset = data_lib.load_dataset(config.data)
    task = VAETask(config, dataset)
    train_images = dataset.arrays("train")["image"]
    test_images = dataset.arrays("test")["image"]
    params = task.init_params(jax.random.key(0), {"image": train_images[:1]})
    opt = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, batch, key):
        grads = jax.grad(lambda p: task.loss_fn(p, {"image": batch}, key)[0])(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state = opt.init(params)
    order = np.random.default_rng(0).permutation(len(train_images))
    for i in range(300):
        rows = order[(i * 64) % 1408:(i * 64) % 1408 + 64]
        params, opt_state = step(params, opt_state, train_images[rows],
                                 jax.random.key(i))

    noise = np.random.default_rng(1).uniform(size=test_images.shape).astype(np.float32)
    score = jax.jit(lambda p, x, k: task.anomaly_score(p, x, k))
    s_digits = np.asarray(score(params, test_images, jax.random.key(1)))
    s_noise = np.asarray(score(params, noise, jax.random.key(2)))
    assert s_digits.shape == s_noise.shape == (len(test_images),)
    # Every noise image scores above every test digit.
    assert s_noise.min() > s_digits.max(), (s_noise.min(), s_digits.max())
