"""experiments.benchmark: one experiment through genjax.tools.benchmark, and
the --all table (each experiment in its own process, reports reused)."""

from __future__ import annotations

import json

from conftest import assert_one_error_line
from experiments import benchmark


def test_usage_errors_are_one_line(tmp_path, capsys):
    workdir = tmp_path / "wd"
    for argv, must in ((["--experiments=nope"], "'nope'"),
                       (["--experiments=gpt_shakespeare_char", "--preset=smoke",
                         "--steps=0"], "--steps"),
                       (["--fresh=maybe"], "--fresh='maybe'")):
        assert benchmark.main(["--all", f"--workdir={workdir}", *argv]) == 2
        assert_one_error_line(capsys.readouterr().err, must)
    assert benchmark.main(["no_such_experiment"]) == 2
    assert_one_error_line(capsys.readouterr().err, "no_such_experiment")


def test_all_builds_the_table_and_reuses_reports(tmp_path, capsys):
    workdir = tmp_path / "bench"
    argv = ["--all", f"--workdir={workdir}", "--preset=smoke", "--steps=2",
            "--sampling=4", "--experiments=vae_digits"]
    assert benchmark.main(argv) == 0, capsys.readouterr().err
    rows = json.loads((workdir / "benchmark.json").read_text())["rows"]
    assert [r["experiment"] for r in rows] == ["vae_digits"]
    for r in rows:
        assert "error" not in r, r
        assert r["steps"] == 2 and r["step_seconds"]["median"] > 0
        assert r["peak_host_memory_bytes"] > 2**20
        assert r["sampling_num_samples"] == 4 and r["sampling_seconds"]
    table = (workdir / "benchmark.md").read_text()
    assert "| `vae_digits` | vae |" in table and "GiB" in table
    mtime = (workdir / "reports" / "vae_digits.json").stat().st_mtime
    assert benchmark.main(argv) == 0
    assert (workdir / "reports" / "vae_digits.json").stat().st_mtime == mtime


def test_a_dataset_that_cannot_be_had_is_measured_on_its_stand_in(monkeypatch):
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel

    def unavailable(config):
        raise data_lib.DatasetError(f"dataset {config.name!r} is not prepared")

    monkeypatch.setattr(data_lib, "load_dataset", unavailable)
    assert benchmark._stand_in("ddpm_cifar10", "cpu") == "shapes32"
    assert benchmark._stand_in("ddpm_mnist", "cpu") is None  # no stand-in: its own error
    monkeypatch.setattr(data_lib, "load_dataset", lambda config: None)
    assert benchmark._stand_in("ddpm_cifar10", "cpu") is None
