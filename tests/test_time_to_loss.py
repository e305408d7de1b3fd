"""experiments.time_to_loss: the recipes it builds, its summary of curves,
and a worker's curve against the training loop's own result."""

from __future__ import annotations

import json
import pathlib

import pytest

from conftest import assert_one_error_line, needs_data
from experiments import gpt_shakespeare_char as gpt
from experiments import time_to_loss as ttl
from genjax.train import loop

SHAKESPEARE_DIR = (pathlib.Path(__file__).resolve().parents[1].parent
                   / "shared" / "data" / "tiny_shakespeare")
needs_shakespeare = needs_data(
    (SHAKESPEARE_DIR / "input.txt").is_file(),
    f"Tiny Shakespeare's input.txt is not in {SHAKESPEARE_DIR}")


def test_recipes():
    fast = ttl.recipe_config("cpu_fast")
    assert fast.train.optimizer == "muon" and fast.model.position == "rope"
    # nanoGPT's shape, batch and evaluation windows: the same evaluation.
    cpu = ttl.recipe_config("cpu")
    for key in ("block_size", "num_layers", "num_heads", "width"):
        assert fast.model[key] == cpu.model[key]
    assert fast.train.batch_size == cpu.train.batch_size
    assert ttl.recipe_config("cpu_fast@700").train.num_steps == 700
    no_muon = ttl.recipe_config("cpu_fast-muon")
    assert no_muon.train.optimizer == "adamw" and no_muon.model.position == "rope"
    assert ttl.recipe_config("cpu_fast-rope@50").model.position == "learned"
    # Every lever, taken out, gives nanoGPT's choice back; every rejected
    # one, added, changes what cpu_fast has.
    for sign, table in (("-", gpt.LEVERS), ("+", gpt.REJECTED)):
        for lever, overrides in table.items():
            config = ttl.recipe_config(f"cpu_fast{sign}{lever}")
            for key, value in overrides.items():
                section, name = key.split(".")
                assert config[section][name] == value
                assert ttl.recipe_config("cpu_fast")[section][name] != value
    assert ttl.recipe_config("cpu_fast+untied@40").model.tie_head is False


@pytest.mark.parametrize("recipe,bad", [
    ("tiny", "'tiny' is not a preset"),
    ("cpu_fast-dropout", "unknown lever -dropout"),
    ("cpu_fast+muon", "unknown lever \\+muon"),
    ("cpu-muon", "only cpu_fast has levers"),
    ("cpu_fast@0", "@0 is not a positive step count"),
])
def test_bad_recipes_are_named(recipe, bad):
    with pytest.raises(ttl.RaceError, match=bad):
        ttl.recipe_config(recipe)


def test_usage_errors_are_one_line(tmp_path, capsys):
    workdir = tmp_path / "wd"
    assert ttl.main([f"--workdir={workdir}", "--recipes=cpu,nope"]) == 2
    assert_one_error_line(capsys.readouterr().err, "nope")
    assert ttl.main([f"--workdir={workdir}", "--every=0"]) == 2
    assert_one_error_line(capsys.readouterr().err, "--every=0")
    assert ttl.main([f"--workdir={workdir}", "--text=/nonexistent/input.txt",
                     "--torch=false"]) == 2
    assert_one_error_line(capsys.readouterr().err, "/nonexistent/input.txt")
    assert not workdir.exists()


def _curve(points):
    return {"points": [{"step": s, "seconds": t, "loss": l} for s, t, l in points]}


def test_summary_of_curves():
    curves = {"pytorch": _curve([(100, 10.0, 2.2), (200, 20.0, 1.93), (300, 30.0, 1.91)]),
              "fast": _curve([(50, 6.0, 2.0), (100, 12.0, 1.905), (150, 18.0, 1.85)]),
              "long": _curve([(100, 20.0, 1.95), (200, 40.0, 1.70)]),
              "slow": _curve([(100, 40.0, 2.5)])}
    rows = {r["recipe"]: r for r in ttl.summarize(curves, 1.91)}
    assert rows["pytorch"]["seconds_to_target"] == 30.0
    assert rows["fast"]["seconds_to_target"] == 12.0
    assert rows["fast"]["step_at_target"] == 100
    assert rows["fast"]["time_ratio_to_pytorch"] == 0.4
    # Within PyTorch's 30 s: the fast recipe finished (1.85); the long one
    # had reached 1.95 by then; the slow one nothing.
    assert rows["fast"]["loss_within_pytorch_time"] == 1.85
    assert rows["long"]["loss_within_pytorch_time"] == 1.95
    assert rows["slow"]["loss_within_pytorch_time"] is None
    assert rows["slow"]["seconds_to_target"] is None
    table = ttl.render({"target": 1.91, "every": 50, "recipes": list(rows.values())})
    assert "not reached" in table and "| genjax fast | 12.0 s (100) | 0.40 |" in table


@needs_shakespeare
def test_worker_trains_as_the_training_loop_does(tmp_path):
    """The curve's last point is the loss the training command reports for
    the same preset: the worker runs the same steps on the same data."""
    config = gpt.get_config("smoke")
    config.data.manual_dir = str(SHAKESPEARE_DIR)
    metrics = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                      gpt.EXPERIMENT.make_task)
    curve = ttl.genjax_curve("smoke", every=10, text_dir=str(SHAKESPEARE_DIR))
    assert [p["step"] for p in curve["points"]] == [10, 20]
    assert curve["points"][-1]["loss"] == pytest.approx(metrics["eval/loss"], rel=1e-5)
    assert curve["points"][0]["loss"] > curve["points"][-1]["loss"]
    seconds = [p["seconds"] for p in curve["points"]]
    assert 0 < seconds[0] < seconds[1] <= curve["train_seconds"]


@needs_shakespeare
def test_race_without_torch_writes_its_outputs(tmp_path, capsys):
    workdir = tmp_path / "race"
    text = SHAKESPEARE_DIR / "input.txt"
    code = ttl.main([f"--workdir={workdir}", "--recipes=smoke@10",
                     "--torch=false", "--every=5", f"--text={text}"])
    assert code == 0, capsys.readouterr().err
    for name in ("time_to_loss.json", "time_to_loss.md", "time_to_loss.png",
                 "curves/smoke@10.json"):
        assert (workdir / name).is_file(), name
    assert "genjax smoke@10" in capsys.readouterr().out
    saved = json.loads((workdir / "time_to_loss.json").read_text())
    assert [p["step"] for p in saved["curves"]["smoke@10"]["points"]] == [5, 10]
    assert saved["target"] == ttl.TARGET  # no PyTorch run: the fixed target
    # A rerun reuses the curve.
    mtime = (workdir / "curves" / "smoke@10.json").stat().st_mtime
    assert ttl.main([f"--workdir={workdir}", "--recipes=smoke@10", "--torch=false",
                     "--every=5", f"--text={text}"]) == 0
    assert (workdir / "curves" / "smoke@10.json").stat().st_mtime == mtime
