"""The head-to-head study: one command, one table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_one_error_line, read_json
from experiments import compare


def test_every_row_is_a_registered_experiment_with_its_likelihood_labelled():
    from genjax import registry  # pylint: disable=import-outside-toplevel
    experiments = registry.load_all()
    families = set()
    for row in compare.ROWS:
        assert row.experiment in experiments, row
        families.add(experiments[row.experiment].family)
        assert bool(row.likelihood_key) == bool(row.likelihood) == bool(row.likelihood_kind)
        assert row.likelihood in ("", "nats", "bits/dim")
    # Every image family of the registry has a row.
    assert families >= {"vae", "gan", "diffusion", "score", "flow", "autoregressive",
                        "mixture"}
    assert "compare" in registry.studies()


def test_dataset_specs_and_flags_are_checked_in_one_line(tmp_path):
    assert compare.parse_dataset("digits") == ("digits", None)
    assert compare.parse_dataset(f"mnist:{tmp_path}") == ("mnist", str(tmp_path))
    for spec, named in (("nosuch", "unknown dataset 'nosuch'"),
                        ("eight_gaussians", "'eight_gaussians' is a points dataset"),
                        ("mnist:/nonexistent/dir", "'/nonexistent/dir' is not a directory")):
        with pytest.raises(compare.CompareError, match=named):
            compare.parse_dataset(spec)
    with pytest.raises(compare.CompareError, match="--workdir is required"):
        compare.parse_args(["--dataset=digits"])
    with pytest.raises(compare.CompareError, match="unknown flag --presett"):
        compare.parse_args(["--dataset=digits", "--workdir=x", "--presett=cpu"])
    args = compare.parse_args(["--dataset=digits", "--workdir=x", "--experiments=a,b",
                               "--num_samples=50"])
    assert args["experiments"] == ("a", "b") and args["num_samples"] == 50
    with pytest.raises(compare.CompareError, match="unknown nope"):
        compare.compare("digits", "smoke", str(tmp_path / "wd"), experiments=("nope",))
    with pytest.raises(compare.CompareError, match="--preset='fast'"):
        compare.compare("digits", "fast", str(tmp_path / "wd"))
    assert not (tmp_path / "wd").exists()


def test_a_bad_flag_exits_2_with_one_line(tmp_path, capsys):
    code = compare.main(["--dataset=nosuch", f"--workdir={tmp_path / 'wd'}"])
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "unknown dataset 'nosuch'")
    assert not (tmp_path / "wd").exists()


def test_the_sampler_parameters_leave_out_the_discriminator():
    params = {"generator": {"w": np.zeros((3, 4))}, "generator_state": {},
              "discriminator": {"w": np.zeros((100, 100))}, "discriminator_state": {}}
    assert compare.count_parameters(params) == 12
    assert compare.count_parameters({"a": np.zeros(5), "b": {"c": np.zeros((2, 2))}}) == 9


@pytest.mark.slow
def test_the_smoke_study_writes_one_table_of_every_row(shared_data_dir, tmp_path):
    """Two rows on digits: trained, judged by one protocol, written as JSON,
    markdown, a plot and sample grids; a second call reuses both runs."""
    workdir = tmp_path / "study"
    rows = compare.compare("digits", "smoke", str(workdir),
                           experiments=("bmm_mnist", "pixelcnn_mnist"), num_samples=60,
                           data_dir=str(shared_data_dir))
    saved = read_json(workdir / "compare.json")["rows"]
    assert [r["experiment"] for r in saved] == ["pixelcnn_mnist", "bmm_mnist"]
    for row in saved:
        assert row["family"] and row["num_samples"] == 60
        for key in ("fd", "kid", "precision", "recall", "density", "coverage",
                    "classifier_score", "classes_hit", "class_kl",
                    "sample_seconds_per_1000", "parameters", "train_seconds", "likelihood"):
            assert row[key] is not None and np.isfinite(row[key]), (row["experiment"], key)
        assert (workdir / "samples" / f"{row['experiment']}.png").is_file()
    by_name = {r["experiment"]: r for r in saved}
    assert by_name["pixelcnn_mnist"]["nfe"] == 64 and by_name["bmm_mnist"]["nfe"] is None
    assert by_name["pixelcnn_mnist"]["likelihood_unit"] == "nats"
    table = (workdir / "compare.md").read_text()
    assert "`pixelcnn_mnist`" in table and "nats (exact)" in table
    assert (workdir / "compare_quality_vs_time.png").stat().st_size > 1000
    # Reused: nothing retrains (the recorded training time stays), and the
    # same keys give the same numbers.
    again = compare.compare("digits", "smoke", str(workdir),
                            experiments=("bmm_mnist", "pixelcnn_mnist"), num_samples=60,
                            data_dir=str(shared_data_dir))
    for a, b in zip(rows, again):
        assert a["train_seconds"] == b["train_seconds"]
        assert a["fd"] == pytest.approx(b["fd"], rel=1e-6)
    assert json.loads((workdir / "compare.json").read_text())["rows"][0]["fd"] == again[0]["fd"]
