"""The head-to-head study: one command, one table."""

from __future__ import annotations

import json
import os

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

    class Mixture:  # counts its free parameters itself, as MixtureTask does
        num_parameters = 7
    assert compare.count_parameters({"eigenvectors": np.zeros((2, 3, 3))}, Mixture()) == 7


@pytest.mark.slow
def test_the_smoke_study_writes_one_table_of_every_row(shared_data_dir, tmp_path,
                                                        monkeypatch):
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
    assert "`pixelcnn_mnist`" in table and "nats, exact" in table
    assert (workdir / "compare_quality_vs_time.png").stat().st_size > 1000
    assert all(r["train_seconds_source"] == "study" for r in saved)
    assert all(r["published"] is None for r in saved)  # published numbers are MNIST's
    # Reused: nothing retrains (the recorded training time stays) and nothing
    # samples again (the scores are kept with their protocol and step) ...
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again")
    monkeypatch.setattr(compare.evaluation, "sample_quality_metrics", no_sampling)
    again = compare.compare("digits", "smoke", str(workdir),
                            experiments=("bmm_mnist", "pixelcnn_mnist"), num_samples=60,
                            data_dir=str(shared_data_dir))
    assert again == rows
    # ... and measuring again with the same keys gives the same numbers.
    monkeypatch.undo()
    (workdir / "bmm_mnist" / compare.SCORES_FILE).unlink()
    third = compare.compare("digits", "smoke", str(workdir), experiments=("bmm_mnist",),
                            num_samples=60, data_dir=str(shared_data_dir))
    assert third[0]["fd"] == pytest.approx(rows[1]["fd"], rel=1e-6)
    assert third[0]["train_seconds"] == rows[1]["train_seconds"]
    assert json.loads((workdir / "compare.json").read_text())["rows"][0]["fd"] == third[0]["fd"]


def test_a_reused_run_not_trained_by_the_study_takes_its_time_from_its_log(tmp_path):
    board = tmp_path / "tensorboard"
    board.mkdir()
    # Two sessions: 600 s, then a resumption of 300 s; other files ignored.
    for start, seconds in ((1_700_000_000, 600), (1_700_090_000, 300)):
        event = board / f"events.out.tfevents.{start}.host"
        event.write_bytes(b"")
        os.utime(event, (start + seconds, start + seconds))
    (board / "notes.txt").write_text("x")
    assert compare.logged_training_seconds(str(tmp_path)) == 900
    assert compare.logged_training_seconds(str(tmp_path / "nothing")) is None


def test_the_table_gives_each_row_its_gap_to_the_published_number():
    row = {"family": "autoregressive", "experiment": "pixelcnn_mnist", "recipe": "gated",
           "likelihood": 90.02, "likelihood_unit": "nats", "likelihood_kind": "exact",
           "published": 81.3, "published_by": "PixelCNN, van den Oord et al. 2016",
           "step": 1200, "train_seconds": 946.0, "train_seconds_source": "log",
           "num_samples": 1000}
    row.update({k: 1.0 for k in compare.QUALITY_KEYS + ("sample_seconds_per_1000", "nfe",
                                                        "parameters")})
    gan = dict(row, experiment="dcgan_mnist", likelihood=None, published=None,
               train_seconds_source="study")
    from genjax.evaluate import sample_quality  # pylint: disable=import-outside-toplevel
    table = compare.markdown([row, gan], "mnist", "cpu", sample_quality.default_protocol())
    line = next(x for x in table.splitlines() if "`pixelcnn_mnist`" in x)
    assert "| 90.02 nats, exact | 81.3 (+8.72) |" in line and "15.8 min† |" in line
    gan_line = next(x for x in table.splitlines() if "`dcgan_mnist`" in x)
    assert "| — | — |" in gan_line and "15.8 min |" in gan_line
    assert "published: 81.3 nats, PixelCNN, van den Oord et al. 2016" in table


def test_a_workdir_is_reused_only_for_the_same_recipe(tmp_path):
    from genjax import config as config_lib  # pylint: disable=import-outside-toplevel
    row = next(r for r in compare.ROWS if r.experiment == "bmm_mnist")
    config = compare.row_config(row, "smoke", "digits", None)
    saved = config_lib.to_dict(config)
    workdir = tmp_path / "bmm_mnist"
    assert not compare.finished(config, str(workdir))  # nothing there yet
    workdir.mkdir()
    # Saved before a switch existed that is off now; where the data lived and
    # how often it logged do not matter: the same recipe, unfinished ...
    config.model.class_conditional = False
    saved["data"]["manual_dir"] = "/elsewhere"
    saved["train"]["log_every"] = 7
    (workdir / "config.json").write_text(json.dumps(saved))
    assert not compare.finished(config, str(workdir))
    # ... then finished.
    (workdir / "eval.json").write_text(json.dumps({"step": config.train.num_steps}))
    assert compare.finished(config, str(workdir))
    # Another recipe or dataset in the workdir: one line naming the change.
    for key, value, named in (("model", {**saved["model"], "components": 3},
                               "model.components"),
                              ("train", {**saved["train"], "batch_size": 3},
                               "train.batch_size"),
                              ("data", {**saved["data"], "name": "mnist"}, "data.name")):
        (workdir / "config.json").write_text(json.dumps({**saved, key: value}))
        with pytest.raises(compare.CompareError, match=f"holds a run of another recipe "
                                                       f"\\({named}"):
            compare.finished(config, str(workdir))


def test_readme_shows_a_registered_study_table_rendered_from_its_rows(tmp_path, monkeypatch):
    from genjax import registry  # pylint: disable=import-outside-toplevel
    row = {"family": "mixture (EM)", "experiment": "bmm_mnist", "recipe": "batch EM",
           "likelihood": 118.59, "likelihood_unit": "nats", "likelihood_kind": "exact",
           "published": 137.64, "published_by": "500 components", "step": 60,
           "train_seconds": 214.0, "train_seconds_source": "study", "num_samples": 1000}
    row.update({k: 0.5 for k in compare.QUALITY_KEYS + ("sample_seconds_per_1000",)})
    row.update(nfe=None, parameters=1_570_000)
    (tmp_path / "rows.json").write_text(json.dumps({"rows": [row]}))
    result = registry.StudyResult(
        preset="cpu", dataset="mnist", rows_file="rows.json",
        command="python -m experiments.compare --dataset=mnist --workdir=X",
        date="2026-12-07", host="2-core CPU", wall_time="1 h")
    study = registry.Study(name="compare", description="every family in one table",
                           presets=("cpu",), command="c", render=compare.render,
                           results=(result,))
    monkeypatch.setattr(registry, "_STUDIES", {"compare": study})
    text = registry.study_results(tmp_path)
    assert "### Every family in one table: mnist, `--preset=cpu`" in text
    assert "| mixture (EM) | `bmm_mnist` | 118.6 nats, exact | 137.64 (-19) |" in text
    assert "3.6 min |" in text and "1,570,000 |" in text
    assert "`python -m experiments.compare --dataset=mnist --workdir=X`: 1 h end to end" in text


def test_a_resumed_row_takes_its_time_from_its_log(tmp_path, monkeypatch):
    """A study interrupted mid-row resumes the run; the row's time is then
    the sum of its sessions (its TensorBoard spans), not the last call's."""
    row = next(r for r in compare.ROWS if r.experiment == "bmm_mnist")
    config = compare.row_config(row, "smoke", "digits", None)
    workdir = tmp_path / "bmm_mnist"
    (workdir / "checkpoints").mkdir(parents=True)  # the interrupted session's
    board = workdir / "tensorboard"
    board.mkdir()
    first = board / "events.out.tfevents.1700000000.host"
    first.write_bytes(b"")
    os.utime(first, (1_700_000_400, 1_700_000_400))  # 400 s before the interruption

    def finish(config, workdir, make_task, devices=None):  # the resumed session: 100 s
        second = board / "events.out.tfevents.1700050000.host"
        second.write_bytes(b"")
        os.utime(second, (1_700_050_100, 1_700_050_100))
    monkeypatch.setattr(compare.loop, "train_and_evaluate", finish)
    assert compare.train_or_reuse(row, config, str(workdir)) == (500.0, "log")
    # Kept: a later call that finds the run finished reads the same.
    from genjax import config as config_lib  # pylint: disable=import-outside-toplevel
    (workdir / "config.json").write_text(json.dumps(config_lib.to_dict(config)))
    (workdir / "eval.json").write_text(json.dumps({"step": config.train.num_steps}))
    assert compare.train_or_reuse(row, config, str(workdir)) == (500.0, "log")


def test_a_shortened_recipe_shortens_its_warmup_and_its_average_in_proportion():
    import ml_collections  # pylint: disable=import-outside-toplevel
    config = ml_collections.ConfigDict({"train": {
        "num_steps": 2200, "warmup_steps": 200, "ema_decay": 0.995, "batch_size": 64,
        "eval_every": 1100, "checkpoint_every": 1000}})
    compare.shorten(config, 0.125, 1000)
    t = config.train
    assert (t.num_steps, t.warmup_steps, t.eval_every) == (275, 25, 275)
    # The average's horizon, 1 / (1 - decay), from 200 steps to 25: after
    # the run, the initial weights' share is 0.96^275, not 0.995^275 = 0.25.
    assert 1.0 / (1.0 - t.ema_decay) == pytest.approx(25.0)
    assert t.ema_decay ** t.num_steps < 1e-4
    # No average stays none; a full-length recipe is left as it is.
    config.train.ema_decay = 0.0
    compare.shorten(config, 0.5, 1000)
    assert config.train.ema_decay == 0.0 and config.train.num_steps == 138
    full = ml_collections.ConfigDict({"train": {"num_steps": 900, "ema_decay": 0.999,
                                                "batch_size": 64}})
    compare.shorten(full, 1.0, 1000)
    assert full.train.ema_decay == 0.999 and full.train.num_steps == 900
