"""Evaluation is a function of the data, the parameters and the seed only.

Each example's randomness (binarisation, importance samples) comes from the
key of its index in the split, and sums are taken inside the jitted step and
divided once, so neither the eval batch size nor the padding of the last
batch moves a metric.
"""

from __future__ import annotations

import dataclasses
import json

import chex
import pytest
from conftest import MAKE_TASK, run_python, short_config

from genjax.train import evaluation, modes


def _final_eval(workdir, eval_batch_size: int) -> dict:
    config = short_config(**{"eval.batch_size": eval_batch_size})
    run, _, params = modes.restore_for_inference(config, str(workdir), MAKE_TASK)
    try:
        return evaluation.run_eval(run, params, final=True)
    finally:
        run.checkpointer.close()


def test_eval_metrics_do_not_depend_on_the_eval_batch_size(short_run):
    workdir, _ = short_run
    # 360 test digits: one batch, batches that divide the split, and 7 and
    # 100 that leave a padded last batch.
    reference = _final_eval(workdir, 360)
    assert {"eval/neg_elbo", "eval/nll_iwae", "eval/kl"} <= set(reference)
    for batch_size in (7, 100, 120):
        got = _final_eval(workdir, batch_size)
        chex.assert_trees_all_close(got, reference, rtol=1e-5, atol=1e-5)


def test_eval_metrics_depend_on_the_seed(short_run):
    """The keys come from config.seed: another seed draws other binarisations
    and importance samples (so the equality above is not vacuous)."""
    workdir, _ = short_run
    config = short_config(**{"eval.batch_size": 120, "seed": 1})
    run, _, params = modes.restore_for_inference(config, str(workdir), MAKE_TASK)
    try:
        other = evaluation.run_eval(run, params, final=True)
    finally:
        run.checkpointer.close()
    reference = _final_eval(workdir, 120)
    assert other["eval/neg_elbo"] != pytest.approx(reference["eval/neg_elbo"],
                                                   rel=1e-7)


def test_eval_num_examples_evaluates_the_first_examples_of_the_split(short_run):
    """``eval.num_examples=N`` is the whole-split evaluation of a test split
    cut to its first N examples (same keys, any eval batch)."""
    workdir, _ = short_run
    limited = _final_eval_with(workdir, **{"eval.num_examples": 100, "eval.batch_size": 7})
    config = short_config(**{"eval.batch_size": 100})
    run, _, params = modes.restore_for_inference(config, str(workdir), MAKE_TASK)
    try:
        dataset = run.dataset
        test = {k: v[:100] for k, v in dataset.splits["test"].items()}
        run = dataclasses.replace(run, dataset=dataclasses.replace(
            dataset, splits=dict(dataset.splits, test=test)))
        reference = evaluation.run_eval(run, params, final=True)
    finally:
        run.checkpointer.close()
    chex.assert_trees_all_close(limited, reference, rtol=1e-5, atol=1e-5)
    whole = _final_eval(workdir, 120)
    assert limited["eval/neg_elbo"] != pytest.approx(whole["eval/neg_elbo"], rel=1e-7)


def _final_eval_with(workdir, **overrides) -> dict:
    config = short_config(**overrides)
    run, _, params = modes.restore_for_inference(config, str(workdir), MAKE_TASK)
    try:
        return evaluation.run_eval(run, params, final=True)
    finally:
        run.checkpointer.close()


_DEVICE_COUNTS = (1, 3, 8)
_PRIME_SPLIT = 127

# Run with 8 CPU devices: each experiment's smoke preset, its test split cut
# to a prime number of examples, evaluated at its initial parameters on
# meshes of 1, 3 and 8 of the devices, with an eval batch (50) that
# neither the split nor the device counts but 1 divide.
_ON_DEVICE_COUNTS = f"""
import dataclasses, json, sys
import jax
from experiments import ddpm_toy2d, score_toy2d, vae_digits
from genjax import data as data_lib
from genjax.train import evaluation, run as run_lib

def cut(dataset, n):
    test = {{k: v[:n] for k, v in dataset.splits["test"].items()}}
    return dataclasses.replace(dataset, splits=dict(dataset.splits, test=test))

out = {{}}
for module in (vae_digits, ddpm_toy2d, score_toy2d):
    config = module.get_config("smoke")
    if module is score_toy2d:  # The ODE likelihood and the SDE's own sampler.
        config.eval.compare_samplers = ("pc:3",)
    config.train.batch_size = 48  # Only training needs a batch the devices divide.
    config.eval.batch_size = 50
    dataset = cut(data_lib.load_dataset(config.data), {_PRIME_SPLIT})
    for k in {_DEVICE_COUNTS}:
        run = run_lib.build(config, sys.argv[1], module.EXPERIMENT.make_task,
                            dataset=dataset, devices=jax.devices()[:k])
        params = run.task.inference_params(run.init_state_fn(), config.eval.use_ema)
        metrics = evaluation.run_eval(run, params, final=True)
        out.setdefault(module.EXPERIMENT.name, {{}})[k] = {{
            name: v for name, v in metrics.items() if not name.endswith("seconds")}}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_eval_is_exact_on_any_device_count(tmp_path):
    """Every eval metric (the ELBO and IWAE bound, the diffusion loss and
    bits/dim bound, the score model's probability-flow ODE likelihood with
    its Hutchinson probes, the sample-quality statistics of every sampler)
    is the same on 1, 3 and 8 devices, on a split of a prime size."""
    proc = run_python(["-c", _ON_DEVICE_COUNTS, str(tmp_path)], devices=8,
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == {"vae_digits", "ddpm_toy2d", "score_toy2d"}
    expected = {
        "vae_digits": {"eval/neg_elbo", "eval/nll_iwae", "eval/kl"},
        "ddpm_toy2d": {"eval/loss", "eval/bound_nll_bound", "eval/energy_distance",
                       "eval/energy_distance_floor", "eval/ddpm/energy_distance",
                       "eval/class_kl"},
        "score_toy2d": {"eval/loss", "eval/ode_nll", "eval/ode_nfe",
                        "eval/energy_distance", "eval/pc_3/energy_distance"}}
    for name, by_count in results.items():
        reference = by_count["1"]
        assert expected[name] <= set(reference), (name, sorted(reference))
        for count in map(str, _DEVICE_COUNTS[1:]):
            assert set(by_count[count]) == set(reference), (name, count)
            for key, value in reference.items():
                assert by_count[count][key] == pytest.approx(
                    value, rel=1e-4, abs=1e-6), (name, count, key)
