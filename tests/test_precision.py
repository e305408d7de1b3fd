"""Mixed precision (``train.compute_dtype``) and rematerialisation
(``model.remat``) beyond the GPT, whose own ``model.dtype`` and
``model.remat`` test_lm covers.

bfloat16 compute gives losses and gradients close to float32 ones at the
same parameters, and trains to a close loss with float32 weights and
optimiser state; remat gives the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import (dcgan_mnist, ddgan_mnist, ddpm_mnist, flow_matching_mnist,
                         glow_mnist, pixelcnn_mnist, score_sde_mnist, vae_digits)
from genjax.config import ConfigError
from genjax.train import loop, run as run_lib, step as step_lib

from conftest import MAKE_TASK, set_overrides, short_config

F32 = jnp.dtype(jnp.float32)


def test_mixed_precision_computes_in_bf16_and_returns_float32():
    seen = {}

    def loss_fn(params, batch, rng):
        del rng
        seen.update(w=params["w"].dtype, x=batch["x"].dtype, y=batch["y"].dtype)
        loss = jnp.sum(params["w"] * batch["x"]) + jnp.sum(batch["y"])
        return loss, {"loss_again": loss}

    fn = step_lib.mixed_precision(loss_fn, "bfloat16")
    params = {"w": jnp.linspace(0.1, 1.0, 5)}
    batch = {"x": np.arange(5, dtype=np.float32), "y": np.arange(5, dtype=np.int32)}
    (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(
        params, batch, jax.random.key(0))
    assert seen == {"w": jnp.bfloat16, "x": jnp.bfloat16, "y": jnp.int32}
    assert loss.dtype == F32 and aux["loss_again"].dtype == F32
    assert grads["w"].dtype == F32  # The gradient flows through the cast.
    np.testing.assert_allclose(grads["w"], batch["x"])
    assert step_lib.mixed_precision(loss_fn, "float32") is loss_fn
    with pytest.raises(ConfigError, match="'float16'.*bfloat16"):
        step_lib.mixed_precision(loss_fn, "float16")


def _digits(module, **overrides):
    config = module.get_config("smoke")
    return set_overrides(config, {"data.name": "digits", "train.batch_size": 16,
                                  **overrides})


def _build(config, module):
    run = run_lib.build(config, "/nonexistent", module.EXPERIMENT.make_task)
    return run, run.init_state_fn(), next(run_lib.make_train_iterator(run))


def _matmuls(jaxpr) -> list[str]:
    """The output types of every convolution and dot of ``jaxpr``'s text."""
    return [line.split("=")[0] for line in str(jaxpr).splitlines()
            if "conv_general_dilated[" in line or "dot_general[" in line]


# Every gradient-trained family but the GPT (test_lm): what its update
# differentiates, and the part of its convolutions and dots that must run in
# bfloat16 (a flow keeps its invertible 1x1 convolutions and split priors
# float32, with the log-determinants).
FAMILIES = {"vae": (vae_digits, 1.0), "ddpm": (ddpm_mnist, 1.0),
            "score_sde": (score_sde_mnist, 1.0),
            "flow_matching": (flow_matching_mnist, 1.0), "glow": (glow_mnist, 0.5),
            "pixelcnn": (pixelcnn_mnist, 1.0), "dcgan": (dcgan_mnist, 1.0),
            "ddgan": (ddgan_mnist, 1.0)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_training_computes_its_networks_in_bf16(family):
    """Traced, not run: a float32 constant (a noise schedule, a time
    embedding, a latent draw) promoting the network back to float32 would
    make the option silently do nothing."""
    module, share = FAMILIES[family]
    config = _digits(module, **{"train.compute_dtype": "bfloat16"})
    run, state, batch = _build(config, module)
    task, key = run.task, jax.random.key(0)
    if hasattr(task, "d_loss_fn"):  # Both players' losses, as the update casts them.
        p, ms = state.params, state.model_state
        losses = [(step_lib.mixed_precision(task.d_loss_fn, "bfloat16"),
                   (p["discriminator"], p["generator"], ms, batch, key)),
                  (step_lib.mixed_precision(task.g_loss_fn, "bfloat16"),
                   (p["generator"], p["discriminator"], ms, batch, key))]
    else:
        losses = [(task.training_loss(), (state.params, batch, key))]
    for fn, args in losses:
        out = _matmuls(jax.make_jaxpr(fn)(*args))
        assert out, family
        assert sum("bf16" in t for t in out) >= share * len(out), (family, out)
        assert jax.eval_shape(fn, *args)[0].dtype == F32


def _loss_and_grads(config, module, rng=jax.random.key(1)):
    run, state, batch = _build(config, module)
    (loss, _), grads = jax.jit(jax.value_and_grad(run.task.training_loss(), has_aux=True))(
        state.params, batch, rng)
    return float(loss), jax.tree.leaves(grads)


def _cosine(a, b):
    a = np.concatenate([np.ravel(x) for x in a]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in b]).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("family,rtol,cosine", [
    # The PixelCNN's loss has no randomness beyond the data.
    ("pixelcnn", 1e-2, 0.95),
    # The diffusion loss draws its noise in bfloat16 too (other draws than
    # float32's), so a batch of 64 agrees only to its sampling error.
    ("ddpm", 5e-2, 0.9)])
def test_bf16_loss_and_gradient_are_close_to_float32(family, rtol, cosine):
    module = FAMILIES[family][0]
    loss32, grads32 = _loss_and_grads(_digits(module, **{"train.batch_size": 64}), module)
    loss16, grads16 = _loss_and_grads(_digits(module, **{
        "train.batch_size": 64, "train.compute_dtype": "bfloat16"}), module)
    assert {g.dtype for g in grads16} == {F32}
    np.testing.assert_allclose(loss16, loss32, rtol=rtol)
    assert _cosine(grads16, grads32) > cosine


@pytest.mark.parametrize("family", ["ddpm", "glow"])
def test_remat_gives_the_same_loss_and_gradient(family):
    module = FAMILIES[family][0]
    loss, grads = _loss_and_grads(_digits(module), module)
    loss_r, grads_r = _loss_and_grads(_digits(module, **{"model.remat": True}), module)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for a, b in zip(grads_r, grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_vae_trains_to_a_close_loss_with_float32_state(short_run, tmp_path):
    _, reference = short_run
    config = short_config(**{"train.compute_dtype": "bfloat16"})
    metrics = loop.train_and_evaluate(config, str(tmp_path / "wd"), MAKE_TASK)
    np.testing.assert_allclose(metrics["eval/neg_elbo"], reference["eval/neg_elbo"],
                               rtol=2e-2)
    run = loop.build(config, str(tmp_path / "wd"), MAKE_TASK)
    try:
        _, state, _, _ = run.checkpointer.restore_latest(run.abstract_state)
    finally:
        run.checkpointer.close()
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {F32}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state)
            if hasattr(x, "dtype") and x.ndim} == {F32}


def test_bf16_gan_step_keeps_float32_weights_and_batch_statistics():
    """Both players' losses compute in bfloat16; the batch-norm statistics
    they return come back as float32, so the state's dtypes never change."""
    config = _digits(dcgan_mnist, **{"train.compute_dtype": "bfloat16"})
    run, state, _ = _build(config, dcgan_mnist)
    dtypes = jax.tree.map(lambda x: x.dtype, state)
    step = run_lib.make_step(run)
    it = run_lib.make_train_iterator(run)
    for _ in range(2):
        state, metrics = step(state, step_lib.to_global(next(it), run.mesh))
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes
    assert all(np.isfinite(float(v)) for v in jax.device_get(metrics).values())
