"""experiments.generation_speed: nanoGPT's model in PyTorch holding genjax's
weights (same logits, same greedy text), the table, and usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_error_line
from experiments import generation_speed as gs


def test_usage_errors_are_one_line(tmp_path, capsys):
    workdir = tmp_path / "wd"
    for argv, must in ((["--batches=0"], "--batches"),
                       (["--new_tokens=0"], "--new_tokens=0"),
                       (["--preset=paper"], "--preset='paper'"),
                       (["--torch=maybe"], "--torch='maybe'"),
                       ([f"--run={tmp_path / 'none'}"], "no checkpoints")):
        assert gs.main([f"--workdir={workdir}", *argv]) == 2
        assert_one_error_line(capsys.readouterr().err, must)
    assert not workdir.exists()


def test_genjax_alone(tmp_path, capsys):
    result = gs.measure(str(tmp_path), preset="smoke", batches=(1, 2), new_tokens=8,
                        with_torch=False)
    assert [r["batch"] for r in result["measurements"]] == [1, 2]
    for r in result["measurements"]:
        assert r["genjax_seconds"] > 0 and r["genjax_compile_seconds"] > 0
        assert r["genjax_tokens_per_second"] == pytest.approx(
            r["batch"] * 8 / r["genjax_seconds"])
        assert "torch_seconds" not in r
    saved = json.loads((tmp_path / "generation_speed.json").read_text())
    assert saved["new_tokens"] == 8
    assert "| 2 |" in (tmp_path / "generation_speed.md").read_text()


def test_against_nanogpt_generate(tmp_path):
    torch = pytest.importorskip("torch")
    config, task, params = gs.load_params("smoke", None)
    model = gs.torch_model(torch, params, config)
    check = gs.check_conversion(torch, model, task, params, config)
    assert check["max_logit_difference"] < 1e-4
    assert check["greedy_tokens_equal"] == check["greedy_tokens_compared"] == \
        config.model.block_size - 1
    # nanoGPT's generate crops to the block and keeps going past it.
    idx = gs.torch_generate(torch, model, torch.zeros((3, 1), dtype=torch.long),
                            config.model.block_size + 5, config.model.block_size)
    assert tuple(idx.shape) == (3, config.model.block_size + 6)
    result = gs.measure(str(tmp_path), preset="smoke", batches=(2,), new_tokens=8)
    row = result["measurements"][0]
    assert row["speedup"] == pytest.approx(row["torch_seconds"] / row["genjax_seconds"])
    assert np.isfinite(row["torch_first_token_seconds"])
