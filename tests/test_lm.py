"""The language-model family: next-token objective, sampling filters, cached
generation against a recomputing reference, gradient accumulation, the
AdamW decay mask, and gpt_shakespeare_char end to end (train, resume, eval,
sample without the dataset, usage errors) on the real Tiny Shakespeare."""

from __future__ import annotations

import functools
import math
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import (assert_one_error_line, needs_data, assert_trees_bitwise_equal,
                      read_json, read_jsonl, run_cli, set_overrides)
from experiments import gpt_shakespeare_char
from genjax.data import text as text_lib
from genjax.models import decoding, transformer
from genjax.objectives import next_token
from genjax.tasks import lm
from genjax.train import loop
from genjax.train import step as step_lib

SHAKESPEARE_DIR = (pathlib.Path(__file__).resolve().parents[1].parent
                   / "shared" / "data" / "tiny_shakespeare")
needs_shakespeare = needs_data(
    (SHAKESPEARE_DIR / "input.txt").is_file(),
    f"Tiny Shakespeare's input.txt is not in {SHAKESPEARE_DIR}")
MAKE_TASK = gpt_shakespeare_char.EXPERIMENT.make_task


# --------------------------------------------------------------------------
# The objective.


def test_uniform_logits_cost_log_vocab():
    logits = jnp.zeros((2, 5, 65))
    targets = jnp.arange(10).reshape(2, 5)
    nats, metrics = next_token.loss(logits, targets)
    np.testing.assert_allclose(nats, math.log(65), rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_char"], math.log2(65), rtol=1e-6)
    summary = next_token.summary(float(nats))
    np.testing.assert_allclose(summary["perplexity"], 65.0, rtol=1e-5)


def test_token_nats_by_hand():
    # softmax([ln 3, 0]) = [3/4, 1/4]: target 0 costs ln(4/3), target 1 ln 4.
    logits = jnp.array([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    got = next_token.token_nats(logits, jnp.array([0, 1]))
    np.testing.assert_allclose(got, [math.log(4 / 3), math.log(4.0)], rtol=1e-6)
    per_seq = next_token.sequence_nats(logits[None], jnp.array([[0, 1]]))
    np.testing.assert_allclose(per_seq, [(math.log(4 / 3) + math.log(4.0)) / 2],
                               rtol=1e-6)


# --------------------------------------------------------------------------
# Sampling filters.


def test_top_k_keeps_the_k_largest():
    logits = jnp.array([[1.0, 4.0, 3.0, 2.0, 0.0]])
    out = decoding.filter_logits(logits, top_k=2)
    assert np.isfinite(out).tolist() == [[False, True, True, False, False]]
    np.testing.assert_allclose(out[0, 1:3], [4.0, 3.0])


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = jnp.log(jnp.asarray(probs))[None]
    kept = lambda p: np.isfinite(decoding.filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.4) == [True, False, False, False]
    assert kept(0.7) == [True, True, False, False]
    assert kept(0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]


def test_temperature_scales_logits_and_zero_is_greedy():
    logits = jnp.array([[2.0, 1.0, 0.5]])
    np.testing.assert_allclose(decoding.filter_logits(logits, temperature=0.5),
                               logits / 0.5)
    picks = decoding.sample_next(jax.random.key(0), jnp.tile(logits, (7, 1)),
                                 temperature=0.0)
    assert picks.tolist() == [0] * 7


@pytest.mark.parametrize("kwargs,bad", [
    (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(top_k=-3), "top_k=-3"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5")])
def test_bad_sampling_settings_are_named(kwargs, bad):
    with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
        decoding.filter_logits(jnp.zeros((1, 3)), **kwargs)


def test_samples_follow_the_filtered_distribution():
    # Top-k 2 of [0.6, 0.3, 0.1] renormalises to [2/3, 1/3, 0].
    logits = jnp.log(jnp.array([0.6, 0.3, 0.1]))
    draws = decoding.sample_next(jax.random.key(3), jnp.tile(logits, (20000, 1)),
                                 top_k=2)
    freq = np.bincount(np.asarray(draws), minlength=3) / 20000
    np.testing.assert_allclose(freq, [2 / 3, 1 / 3, 0.0], atol=0.015)


# --------------------------------------------------------------------------
# Generation with the cache, against recomputing the context every token.

VOCAB, BLOCK = 13, 8


@functools.lru_cache(maxsize=None)
def tiny_model():
    model = transformer.GPT(vocab_size=VOCAB, block_size=BLOCK, num_layers=2,
                            num_heads=2, width=16)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                        train=False)["params"]
    return model, params


@functools.partial(jax.jit, static_argnums=(0, 4), static_argnames=(
    "temperature", "top_k", "top_p"))
def _generate(model, params, prompt, key, n, **kw):
    return decoding.generate(model, params, prompt, key, max_new_tokens=n, **kw)


def reference_greedy(model, params, prompt: np.ndarray, n: int) -> np.ndarray:
    """Greedy decoding that recomputes the whole context for every token,
    with the context rule ``generate`` documents: the first tokens see the
    whole (cropped) prompt and text so far; after the cache fills, the last
    ``BLOCK // 2`` tokens are the new start."""
    forward = jax.jit(lambda p, t: model.apply({"params": p}, t, train=False))
    keep = BLOCK // 2
    plen = prompt.shape[1]
    buf = [list(row) for row in prompt]
    ctx_start = plen - min(plen, BLOCK)
    for _ in range(n):
        if len(buf[0]) - ctx_start > BLOCK:  # The cache is full: re-prefill.
            ctx_start = len(buf[0]) - keep
        context = np.asarray([row[ctx_start:] for row in buf], np.int32)
        logits = np.asarray(forward(params, context))[:, -1]
        for row, tok in zip(buf, logits.argmax(-1)):
            row.append(int(tok))
    return np.asarray([row[plen:] for row in buf])


@pytest.mark.parametrize("plen,n", [(3, 4), (3, 30), (1, 25), (12, 20), (3, 1), (1, 18)])
def test_cached_greedy_generation_equals_recomputing(plen, n):
    model, params = tiny_model()
    prompt = np.asarray(jax.random.randint(jax.random.key(plen), (2, plen), 0, VOCAB))
    got = np.asarray(_generate(model, params, jnp.asarray(prompt),
                               jax.random.key(0), n, temperature=0.0))
    assert got.shape == (2, n)
    np.testing.assert_array_equal(got, reference_greedy(model, params, prompt, n))


def test_same_key_same_text_other_key_other_text():
    model, params = tiny_model()
    prompt = jnp.zeros((3, 2), jnp.int32)
    a = _generate(model, params, prompt, jax.random.key(5), 40, top_k=5, top_p=0.9)
    b = _generate(model, params, prompt, jax.random.key(5), 40, top_k=5, top_p=0.9)
    c = _generate(model, params, prompt, jax.random.key(6), 40, top_k=5, top_p=0.9)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < VOCAB


# --------------------------------------------------------------------------
# Gradient accumulation and the decay mask.


def test_accumulated_gradients_equal_the_full_batch():
    model, params = tiny_model()
    tokens = jax.random.randint(jax.random.key(1), (12, BLOCK + 1), 0, VOCAB)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

    def loss_fn(p, b, rng):
        del rng
        return next_token.loss(model.apply({"params": p}, b["inputs"], train=False),
                               b["targets"])

    key = jax.random.key(0)
    (l1, m1), g1 = jax.jit(step_lib.accumulated_value_and_grad(loss_fn, 1))(
        params, batch, key)
    (l3, m3), g3 = jax.jit(step_lib.accumulated_value_and_grad(loss_fn, 3))(
        params, batch, key)
    np.testing.assert_allclose(l3, l1, rtol=1e-6)
    np.testing.assert_allclose(m3["bits_per_char"], m1["bits_per_char"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g3)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_weight_decay_only_on_matrices():
    model = transformer.GPT(vocab_size=VOCAB, block_size=BLOCK, num_layers=1,
                            num_heads=2, width=8, use_bias=True)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                        train=False)["params"]
    mask = {jax.tree_util.keystr(k): v for k, v in
            jax.tree_util.tree_flatten_with_path(lm.decay_mask(params))[0]}
    decayed = sorted(k for k, v in mask.items() if v)
    assert any("wte" in k for k in decayed) and any("kernel" in k for k in decayed)
    assert all("bias" not in k and "scale" not in k for k in decayed)
    assert any("bias" in k for k in mask) and any("scale" in k for k in mask)
    # One AdamW step with zero gradients moves only the decayed parameters.
    config = gpt_shakespeare_char.get_config("smoke")
    opt = optax.adamw(1.0, weight_decay=0.5, mask=lm.decay_mask)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    moved = {jax.tree_util.keystr(k): bool(jnp.any(u != 0)) for k, u in
             jax.tree_util.tree_flatten_with_path(updates)[0]}
    # (Decayed arrays are random, never all zero; the rest get no update.)
    assert moved == mask
    assert config.train.weight_decay == 0.1


def test_muon_takes_the_blocks_matrices_and_adam_the_rest():
    model = transformer.GPT(vocab_size=VOCAB, block_size=BLOCK, num_layers=2,
                            num_heads=2, width=8, use_bias=True, tie_head=False)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                        train=False)["params"]
    dims = {jax.tree_util.keystr(k): v for k, v in
            jax.tree_util.tree_flatten_with_path(lm.muon_dims(params))[0]}
    muon = sorted(k for k, v in dims.items() if v)
    assert muon == sorted(
        f"['block_{i}']['{m}']['{d}']['kernel']"
        for i in range(2) for m, d in (("attn", "qkv"), ("attn", "out"),
                                       ("mlp", "fc"), ("mlp", "out")))
    assert not dims["['wte']['embedding']"] and not dims["['head']['kernel']"]
    # One step from a random gradient: Muon's update of a block matrix is
    # orthogonalised (its singular values nearly equal), Adam's of the
    # embedding is not; both schedules share the warmup.
    config = gpt_shakespeare_char.get_config("smoke")
    config.train.optimizer = "muon"
    config.train.warmup_steps = 0
    config.train.grad_clip_norm = 0.0
    opt, schedule = lm.build_optimizer(config.train, decay_mask=lm.decay_mask,
                                       muon_dims=lm.muon_dims)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape),
                         params)
    updates, _ = opt.update(grads, opt.init(params), params)
    s = np.linalg.svd(np.asarray(updates["block_0"]["mlp"]["fc"]["kernel"]), compute_uv=False)
    assert s.min() / s.max() > 0.5
    s = np.linalg.svd(np.asarray(updates["wte"]["embedding"]), compute_uv=False)
    assert s.min() / s.max() < 0.3
    assert float(schedule(0)) == pytest.approx(config.train.learning_rate)


# --------------------------------------------------------------------------
# End to end on Tiny Shakespeare.


def lm_config(**overrides):
    config = gpt_shakespeare_char.get_config("smoke")
    config.data.manual_dir = str(SHAKESPEARE_DIR)
    return set_overrides(config, overrides)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    if not (SHAKESPEARE_DIR / "input.txt").is_file():
        pytest.skip(f"Tiny Shakespeare's input.txt is not in {SHAKESPEARE_DIR}")
    workdir = tmp_path_factory.mktemp("lm") / "wd"
    metrics = loop.train_and_evaluate(lm_config(), str(workdir), MAKE_TASK)
    return workdir, metrics


def _timeless(path):
    return loop.without_timings(read_json(path))


@needs_shakespeare
def test_training_run_outputs(lm_run):
    workdir, metrics = lm_run
    for key in ("eval/loss", "eval/bits_per_char", "eval/perplexity"):
        assert math.isfinite(metrics[key]), key
    np.testing.assert_allclose(metrics["eval/bits_per_char"],
                               metrics["eval/loss"] / math.log(2), rtol=1e-9)
    np.testing.assert_allclose(metrics["eval/perplexity"],
                               math.exp(metrics["eval/loss"]), rtol=1e-9)
    # 20 steps from ln 65 = 4.17 nats: learning, but far from trained.
    assert metrics["eval/loss"] < math.log(65)
    rows = read_jsonl(workdir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    assert train_rows[-1]["train/loss"] < train_rows[0]["train/loss"]
    assert {"train/bits_per_char", "train/grad_norm",
            "train/learning_rate"} <= set(train_rows[0])
    text = (workdir / "samples" / "samples_final.txt").read_text(encoding="utf-8")
    assert text.count("--- sample ") == 2
    assert (workdir / "samples" / "samples_step0000010.txt").is_file()
    # The vocabulary is in every checkpoint's data state.
    run = loop.build(lm_config(), str(workdir), MAKE_TASK)
    try:
        step, _, data_state, _ = run.checkpointer.restore_latest(None)
    finally:
        run.checkpointer.close()
    assert step == 20
    assert text_lib.tokenizer_from_state(data_state) == run.dataset.tokenizer


@needs_shakespeare
@pytest.mark.parametrize("overrides,rtol", [
    # Recomputing each block in the backward pass: the same numbers.
    ({"model.remat": True}, 1e-5),
    # bf16 compute, float32 parameters and optimiser state: close.
    ({"model.dtype": "bfloat16"}, 2e-2),
], ids=["remat", "bf16"])
def test_remat_and_mixed_precision_train_alike(lm_run, tmp_path, overrides, rtol):
    _, reference = lm_run
    metrics = loop.train_and_evaluate(lm_config(**overrides), str(tmp_path / "wd"),
                                      MAKE_TASK)
    np.testing.assert_allclose(metrics["eval/loss"], reference["eval/loss"], rtol=rtol)
    if "model.dtype" in overrides:
        run = loop.build(lm_config(**overrides), str(tmp_path / "wd"), MAKE_TASK)
        try:
            _, state, _, _ = run.checkpointer.restore_latest(run.abstract_state)
        finally:
            run.checkpointer.close()
        assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
        assert {x.dtype for x in jax.tree.leaves(state.opt_state)
                if hasattr(x, "dtype") and x.ndim} == {jnp.dtype(jnp.float32)}


@needs_shakespeare
def test_muon_recipe_trains(tmp_path):
    config = lm_config(**{"train.optimizer": "muon", "model.position": "rope",
                          "model.qk_norm": True, "model.activation": "relu2"})
    metrics = loop.train_and_evaluate(config, str(tmp_path / "wd"), MAKE_TASK)
    assert metrics["eval/loss"] < math.log(65) - 0.3


@needs_shakespeare
def test_resume_is_bitwise_identical(lm_run, tmp_path):
    workdir = tmp_path / "resumed"
    shutil.copytree(lm_run[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "20")
    (workdir / "eval.json").unlink()
    loop.train_and_evaluate(lm_config(), str(workdir), MAKE_TASK)
    assert read_jsonl(workdir / "metrics.jsonl") == read_jsonl(lm_run[0] / "metrics.jsonl")
    assert _timeless(workdir / "eval.json") == _timeless(lm_run[0] / "eval.json")

    def final_state(wd):
        run = loop.build(lm_config(), str(wd), MAKE_TASK)
        try:
            return jax.device_get(run.checkpointer.restore_latest(run.abstract_state)[1])
        finally:
            run.checkpointer.close()

    assert_trees_bitwise_equal(final_state(workdir), final_state(lm_run[0]))


@needs_shakespeare
def test_eval_mode_scores_the_whole_validation_text(lm_run, tmp_path, capsys):
    workdir = tmp_path / "copy"
    shutil.copytree(lm_run[0], workdir)
    (workdir / "eval.json").unlink()
    code, _, err = run_cli(capsys, "gpt_shakespeare_char", [
        f"--workdir={workdir}", "--preset=smoke", "--mode=eval",
        f"--config.data.manual_dir={SHAKESPEARE_DIR}"])
    assert code == 0, err
    assert _timeless(workdir / "eval.json") == _timeless(lm_run[0] / "eval.json")


@needs_shakespeare
def test_sample_mode_needs_no_dataset_and_repeats(lm_run, tmp_path, capsys):
    workdir = tmp_path / "copy"
    shutil.copytree(lm_run[0], workdir)
    args = [f"--workdir={workdir}", "--preset=smoke", "--mode=sample",
            "--config.data.manual_dir=/nonexistent/dir", "--prompt=ROMEO:",
            "--max_new_tokens=50", "--num_samples=3"]
    code, out, err = run_cli(capsys, "gpt_shakespeare_char", args)
    assert code == 0, err
    saved = (workdir / "samples.txt").read_text(encoding="utf-8")
    assert saved in out
    blocks = saved.split("--- sample ")[1:]
    assert len(blocks) == 3
    for block in blocks:
        body = block.split("---\n", 1)[1].rstrip("\n")
        assert body.startswith("ROMEO:") and len(body) >= len("ROMEO:") + 40
    code, out2, err = run_cli(capsys, "gpt_shakespeare_char", args)
    assert code == 0, err
    assert (workdir / "samples.txt").read_text(encoding="utf-8") == saved


@needs_shakespeare
def test_prompt_outside_the_vocabulary_is_one_line(lm_run, tmp_path, capsys):
    workdir = tmp_path / "copy"
    shutil.copytree(lm_run[0], workdir)
    code, _, err = run_cli(capsys, "gpt_shakespeare_char", [
        f"--workdir={workdir}", "--preset=smoke", "--mode=sample",
        "--prompt=caf\u00e9"])
    assert code == 2
    assert_one_error_line(err, "U+00E9", "vocabulary")
    assert not (workdir / "samples.txt").exists()


@pytest.mark.parametrize("argv,must", [
    (["--config.model.num_heads=3"], ["model.width=32", "model.num_heads=3"]),
    (["--config.train.grad_accum_steps=3"], ["train.grad_accum_steps=3"]),
    (["--config.sample.top_p=0"], ["top_p=0.0"]),
    (["--config.model.dtype=float16"], ["model.dtype='float16'"]),
    (["--config.eval.final_protocol=some"], ["eval.final_protocol='some'"]),
    (["--config.train.optimizer=lion"], ["train.optimizer='lion'", "muon"]),
    (["--config.model.position=alibi"], ["model.position='alibi'", "rope"]),
    (["--config.model.activation=swiglu"], ["model.activation='swiglu'", "relu2"]),
])
def test_config_mistakes_are_one_line(tmp_path, capsys, argv, must):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "gpt_shakespeare_char", [
        f"--workdir={workdir}", "--preset=smoke",
        f"--config.data.manual_dir={SHAKESPEARE_DIR}", *argv])
    assert code == 2, err
    assert_one_error_line(err, *must)
    assert not workdir.exists()


def test_prompt_flag_on_an_image_experiment_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "dcgan_mnist", [
        f"--workdir={tmp_path / 'wd'}", "--preset=smoke", "--prompt=hi"])
    assert code == 2
    assert_one_error_line(err, "--prompt", "dcgan_mnist")


def test_presets_follow_nanogpt():
    cpu = gpt_shakespeare_char.get_config("cpu")
    m, t = cpu.model, cpu.train
    assert (m.num_layers, m.num_heads, m.width, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert (t.batch_size, t.num_steps, t.learning_rate, t.warmup_steps) == (12, 2000, 1e-3, 100)
    assert (cpu.eval.num_batches, cpu.eval.batch_size) == (20, 12)
    paper = gpt_shakespeare_char.get_config("paper")
    m, t = paper.model, paper.train
    assert (m.num_layers, m.num_heads, m.width, m.block_size, m.dropout) == (6, 6, 384, 256, 0.2)
    assert (t.batch_size, t.num_steps, t.b2, t.min_lr_ratio) == (64, 5000, 0.99, 0.1)
    for config in (cpu, paper):
        assert config.data.split_convention == "nanogpt"
        assert config.model.use_bias is False


def _close_rows(rows, ref_rows, rtol):
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    for row, ref in zip(rows, ref_rows):
        assert row.keys() == ref.keys()
        for key in row:
            np.testing.assert_allclose(row[key], ref[key], rtol=rtol, atol=1e-6,
                                       err_msg=f"{key} at step {row['step']}")


@needs_shakespeare
@pytest.mark.slow
@pytest.mark.subprocess
def test_accumulation_and_eight_devices_match_one_device(lm_run, tmp_path):
    """Batch 16 in 2 micro-batches on 8 simulated devices (each micro-batch
    spread over all 8) trains as batch 16 in one piece on one device."""
    from conftest import run_python

    overrides = {"train.batch_size": 16}
    one = tmp_path / "one"
    loop.train_and_evaluate(lm_config(**overrides), str(one), MAKE_TASK)
    eight = tmp_path / "eight"
    proc = run_python(["-m", "experiments.gpt_shakespeare_char", "--preset=smoke",
                       f"--workdir={eight}", f"--config.data.manual_dir={SHAKESPEARE_DIR}",
                       "--config.train.batch_size=16",
                       "--config.train.grad_accum_steps=2"], devices=8, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "on 8 device(s)" in proc.stdout
    _close_rows(read_jsonl(eight / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl"),
                rtol=2e-4)


def test_micro_batch_must_divide_the_devices(tmp_path):
    from conftest import run_python

    workdir = tmp_path / "wd"
    proc = run_python(["-m", "experiments.gpt_shakespeare_char", "--preset=smoke",
                       f"--workdir={workdir}", "--config.train.batch_size=16",
                       "--config.train.grad_accum_steps=4"], devices=8, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_one_error_line(proc.stderr, "grad_accum_steps", "16/4", "8 devices")
    assert not workdir.exists()
