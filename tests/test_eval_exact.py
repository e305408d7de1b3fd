"""Evaluation is a function of the data, the parameters and the seed only.

Each example's randomness (binarisation, importance samples) comes from the
key of its index in the split, and sums are taken inside the jitted step and
divided once, so neither the eval batch size nor the padding of the last
batch moves a metric.
"""

from __future__ import annotations

import chex
import pytest
from conftest import MAKE_TASK, short_config

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
