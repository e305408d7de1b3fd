"""The command line and config overrides: usage errors and valid overrides.

Usage mistakes exit with code 2, print one line ``error: ...`` naming the bad
value, and create no workdir; problems found later (missing data, no
checkpoint) exit with code 1 and one line. Most cases call ``genjax.cli.run``
in this process; the ones whose real process behaviour matters (exit code,
everything a library prints on stderr, 8 simulated devices) run as
subprocesses, started together so they share the two cores.
"""

from __future__ import annotations

import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

from experiments import vae_digits
from genjax import cli
from genjax import config as config_lib
from genjax import registry
from genjax.train import step as step_lib

from conftest import (REPO, assert_one_error_line, run_cli, subprocess_env)

# --------------------------------------------------------------------------
# In-process: genjax.cli.run.

# (argv after --workdir, texts the error line must contain)
USAGE_ERRORS = {
    "unknown_flag": (["--wrkdir=/x"], ["--wrkdir", "--workdir", "--config.KEY"]),
    "flag_without_value": (["--preset"], ["--preset"]),
    "positional": (["smoke"], ["'smoke'"]),
    "unknown_config_key": (["--config.train.batchsize=3"],
                           ["train.batchsize", "batch_size", "num_steps",
                            "learning_rate", "checkpoint_every"]),
    "unknown_config_group": (["--config.trian.batch_size=3"],
                             ["trian.batch_size", "data", "model", "train"]),
    "value_is_not_a_group": (["--config.seed.x=1"], ["seed.x", "not a group"]),
    "group_is_not_a_value": (["--config.train=1"], ["'train'", "batch_size"]),
    "int_wrong_type": (["--config.train.batch_size=abc"],
                       ["train.batch_size", "abc", "int"]),
    "int_given_float": (["--config.train.batch_size=1.5"],
                        ["train.batch_size", "1.5"]),
    "float_wrong_type": (["--config.train.learning_rate=fast"],
                         ["train.learning_rate", "fast", "float"]),
    "bool_wrong_type": (["--config.eval.use_ema=maybe"],
                        ["eval.use_ema", "maybe", "bool"]),
    "tuple_wrong_type": (["--config.model.hidden=wide"],
                         ["model.hidden", "wide", "tuple"]),
    "bad_preset": (["--preset=tiny"], ["'tiny'", "smoke", "cpu", "paper"]),
    "bad_mode": (["--mode=fit"], ["--mode=fit", "train", "eval", "sample"]),
    "bad_num_samples": (["--mode=sample", "--num_samples=many"],
                        ["--num_samples=many"]),
    "zero_num_samples": (["--mode=sample", "--num_samples=0"], ["--num_samples=0"]),
    "zero_steps": (["--config.train.num_steps=0"], ["train.num_steps=0"]),
    "bad_optimizer": (["--config.train.optimizer=adamm"],
                      ["'adamm'", "adam", "sgd"]),
    "bad_schedule": (["--config.train.lr_schedule=cos"], ["'cos'", "cosine"]),
    "bad_likelihood": (["--config.model.likelihood=poisson"],
                       ["'poisson'", "bernoulli", "gaussian"]),
    "bad_architecture": (["--config.model.architecture=resnet"],
                         ["'resnet'", "mlp", "conv"]),
    "negative_cpu_devices": (["--config.cpu_devices=-1"],
                             ["cpu_devices=-1", "positive number"]),
    "negative_eval_num_examples": (["--config.eval.num_examples=-1"],
                                   ["eval.num_examples=-1", "whole test split"]),
    "bad_compute_dtype": (["--config.train.compute_dtype=float16"],
                          ["'float16'", "float32", "bfloat16"]),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_error_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    argv, texts = USAGE_ERRORS[case]
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "vae_digits", [f"--workdir={workdir}", *argv])
    assert code == 2
    assert_one_error_line(err, *texts)
    assert not workdir.exists()


def test_unknown_experiment_via_cli_run(tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "vae_digitz", [f"--workdir={workdir}"])
    assert code == 2
    assert_one_error_line(err, "'vae_digitz'", "vae_digits", "vae_mnist")
    assert not workdir.exists()


def test_missing_workdir_flag(capsys):
    code, _, err = run_cli(capsys, "vae_digits", ["--preset=smoke"])
    assert code == 2
    assert_one_error_line(err, "--workdir")


def test_help_lists_presets(capsys):
    code, out, err = run_cli(capsys, "vae_digits", ["--help"])
    assert code == 0 and err == ""
    assert "--workdir=DIR" in out and "smoke, cpu, paper" in out


def test_eval_and_sample_on_empty_workdir_exit_1(tmp_path, capsys):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    for mode in ("eval", "sample"):
        code, _, err = run_cli(capsys, "vae_digits",
                               [f"--workdir={workdir}", f"--mode={mode}",
                                "--preset=smoke"])
        assert code == 1
        assert_one_error_line(err, str(workdir), "train first")
        assert list(workdir.iterdir()) == []  # nothing written.


# --------------------------------------------------------------------------
# Valid overrides.


def _overridden(overrides):
    experiment = registry.get("vae_digits")
    return cli.build_config(experiment, "smoke", overrides)


def test_valid_overrides_of_every_type():
    config = _overridden([
        ("seed", "7"),
        ("train.batch_size", "32"),
        ("train.learning_rate", "3e-4"),
        ("train.b1", "1"),  # an int literal for a float key
        ("eval.use_ema", "true"),
        ("model.hidden", "(16, 8)"),
        ("model.activation", "tanh"),
        ("data.data_dir", "/some/dir"),
        ("data.manual_dir", "None"),
    ])
    assert config.seed == 7 and type(config.seed) is int
    assert config.train.batch_size == 32 and type(config.train.batch_size) is int
    assert config.train.learning_rate == 3e-4
    assert config.train.b1 == 1.0 and type(config.train.b1) is float
    assert config.eval.use_ema is True
    assert config.model.hidden == (16, 8) and type(config.model.hidden) is tuple
    assert config.model.activation == "tanh"
    assert config.data.data_dir == "/some/dir"
    assert config.data.manual_dir is None
    # Untouched keys keep the preset's values.
    assert config.train.num_steps == 20 and config.model.latents == 4


@pytest.mark.parametrize("raw, expected", [
    ("false", False), ("0", False), ("no", False), ("True", True), ("1", True),
    ("yes", True)])
def test_bool_spellings(raw, expected):
    assert _overridden([("eval.use_ema", raw)]).eval.use_ema is expected


def test_tuple_forms_and_placeholder_back_to_none():
    assert _overridden([("model.hidden", "16")]).model.hidden == (16,)
    assert _overridden([("model.hidden", "[4,4,4]")]).model.hidden == (4, 4, 4)
    config = _overridden([("data.data_dir", "/a"), ("data.data_dir", "none")])
    assert config.data.data_dir is None


def test_parse_args_space_separated_and_overrides_in_order():
    flags, overrides = cli.parse_args(
        ["--workdir", "/w", "--config.seed", "3", "--mode=eval",
         "--config.train.num_steps=5", "--config.seed=4"])
    assert flags == {"workdir": "/w", "mode": "eval"}
    assert overrides == [("seed", "3"), ("train.num_steps", "5"), ("seed", "4")]
    assert _overridden(overrides).seed == 4  # the last one wins


def test_apply_override_error_lists_valid_keys_at_that_level():
    cfg = ml_collections.ConfigDict({"a": {"b": 1, "c": 2.0}})
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.apply_override(cfg, "a.d", "1")
    assert "'a.d'" in str(e.value) and "b, c" in str(e.value)
    assert cfg.to_dict() == {"a": {"b": 1, "c": 2.0}}


def test_every_registered_experiment_has_required_keys_and_presets():
    experiments = registry.load_all()
    assert {"vae_digits", "vae_mnist"} <= set(experiments)
    for exp in experiments.values():
        for preset in registry.PRESETS_REQUIRED:
            config = exp.get_config(preset)
            config_lib.check_required_keys(config, exp.name)
            # Saved configs round-trip (checkpoints keep them as JSON).
            assert config_lib.diff(
                config_lib.to_dict(config_lib.from_dict(config_lib.to_dict(config))),
                config_lib.to_dict(config)) == []


def test_model_diff_takes_a_switch_added_since_and_left_off_as_the_same_model():
    config = ml_collections.ConfigDict({"model": {"width": 8, "class_conditional": False}})
    saved_before = {"model": {"width": 8}}  # written before the switch existed
    assert config_lib.model_diff(saved_before, config) == []
    config.model.class_conditional = True
    assert config_lib.model_diff(saved_before, config) == [
        "model.class_conditional: '<absent>' -> True"]
    config.model.class_conditional = False
    config.model.width = 16
    assert config_lib.model_diff(saved_before, config) == ["model.width: 8 -> 16"]
    # A key whose earlier behaviour is not "off" reads as its registered value.
    saved_vae = {"model": {}}
    vae_config = ml_collections.ConfigDict({"model": {}, "vae": {"importance_samples": 1}})
    assert config_lib.diff(saved_vae, config_lib.to_dict(vae_config), absent_as_off=True) == []
    vae_config.vae.importance_samples = 5
    assert config_lib.diff(saved_vae, config_lib.to_dict(vae_config), absent_as_off=True) == [
        "vae.importance_samples: '<absent>' -> 5"]
    # A run saved before mixed precision existed trained in float32.
    saved_run = {"train": {"num_steps": 10}}
    run_config = {"train": {"num_steps": 10, "compute_dtype": "float32"}}
    assert config_lib.diff(saved_run, run_config, absent_as_off=True) == []
    run_config["train"]["compute_dtype"] = "bfloat16"
    assert config_lib.diff(saved_run, run_config, absent_as_off=True) == [
        "train.compute_dtype: '<absent>' -> 'bfloat16'"]
    # Plain diff still reports the absent key.
    assert config_lib.diff({"a": 1}, {"a": 1, "b": False}) == ["b: '<absent>' -> False"]


# --------------------------------------------------------------------------
# Real processes, started together.

EMPTY = "{empty}"  # replaced by an existing empty directory
WORKDIR = "{workdir}"  # replaced by a path that must not be created

PROCESS_CASES = {
    # name: (argv, devices, exit code, texts the error line must contain)
    "table": (["-m", "experiments"], 1, 0, []),
    "unknown_experiment": (["-m", "experiments", "vae_digitz", f"--workdir={WORKDIR}"],
                           1, 2, ["'vae_digitz'", "vae_digits", "vae_mnist"]),
    "unknown_flag": (["-m", "experiments.vae_digits", f"--workdir={WORKDIR}",
                      "--steps=3"], 1, 2, ["--steps"]),
    "wrong_type": (["-m", "experiments", "vae_digits", f"--workdir={WORKDIR}",
                    "--config.train.batch_size=abc"], 1, 2,
                   ["train.batch_size", "abc"]),
    "batch_over_8_devices": (["-m", "experiments.vae_digits", f"--workdir={WORKDIR}",
                              "--preset=smoke", "--config.train.batch_size=12"],
                             8, 2, ["train.batch_size=12", "8 devices"]),
    "missing_data": (["-m", "experiments.vae_mnist", f"--workdir={WORKDIR}",
                      "--preset=smoke", f"--config.data.data_dir={EMPTY}"],
                     1, 1, ["'mnist'", "not prepared", "manual_dir"]),
    "eval_empty_workdir": (["-m", "experiments.vae_digits", f"--workdir={EMPTY}",
                            "--mode=eval", "--preset=smoke"], 1, 1,
                           ["no checkpoints", "train first"]),
}


@pytest.fixture(scope="module")
def process_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_processes")
    started = {}
    for name, (argv, devices, _, _) in PROCESS_CASES.items():
        empty = base / f"{name}_empty"
        empty.mkdir()
        workdir = base / f"{name}_workdir"
        args = [a.replace(EMPTY, str(empty)).replace(WORKDIR, str(workdir))
                for a in argv]
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=subprocess_env(devices),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)
        started[name] = (proc, workdir, empty)
    results = {}
    for name, (proc, workdir, empty) in started.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err, workdir, empty)
    return results


@pytest.mark.subprocess
@pytest.mark.parametrize("case", sorted(k for k in PROCESS_CASES if k != "table"))
def test_process_errors(case, process_results):
    code, _, err, workdir, empty = process_results[case]
    _, _, expected_code, texts = PROCESS_CASES[case]
    assert code == expected_code, err
    assert_one_error_line(err, *texts)
    assert not workdir.exists()
    assert list(empty.iterdir()) == []


def test_experiments_table_lists_both_vae_experiments(process_results):
    code, out, err, _, _ = process_results["table"]
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line and not line.startswith((" ", "-", "name", "measured"))}
    assert rows["vae_digits"][1:4] == ["vae", "digits", "smoke,cpu,paper"]
    assert rows["vae_mnist"][1:4] == ["vae", "mnist", "smoke,cpu,paper"]
    assert out.splitlines()[0].split()[:4] == ["name", "family", "dataset", "presets"]


# --------------------------------------------------------------------------
# config.cpu_devices: the CPU split into data-parallel devices.

_DEVICES_PROBE = """
import sys
import jax
from genjax.train import step
print(step.split_host_cpu(int(sys.argv[1])), len(jax.devices()))
jax.numpy.zeros(1).block_until_ready()
print(step.split_host_cpu(3), len(jax.devices()))
"""


@pytest.mark.parametrize("xla_flags,expected", [
    ("", ["2 2", "2 2"]),  # The config splits; a later change cannot.
    ("--xla_force_host_platform_device_count=4", ["0 4", "0 4"]),  # XLA_FLAGS wins.
])
def test_split_host_cpu(xla_flags, expected):
    proc = subprocess.run(
        [sys.executable, "-c", _DEVICES_PROBE, "2"], cwd=REPO,
        env=subprocess_env(extra={"XLA_FLAGS": xla_flags}),
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == expected


@pytest.mark.slow
@pytest.mark.subprocess
def test_cpu_devices_config_trains_on_two_devices(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.vae_digits", f"--workdir={workdir}",
         "--preset=smoke", "--config.cpu_devices=2",
         "--config.train.num_steps=2", "--config.train.eval_every=2"],
        cwd=REPO, env=subprocess_env(extra={"XLA_FLAGS": ""}),
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "on 2 device(s)" in proc.stdout
    assert (workdir / "eval.json").is_file()


def test_steps_must_sync_only_on_multi_device_cpu():
    # In-process tests have one device: stand-in meshes give the others.
    def mesh_of(*platforms):
        return types.SimpleNamespace(devices=np.asarray(
            [types.SimpleNamespace(platform=p) for p in platforms]))
    assert not step_lib.steps_must_sync(step_lib.make_mesh(jax.devices()[:1]))
    assert step_lib.steps_must_sync(mesh_of("cpu", "cpu"))
    assert not step_lib.steps_must_sync(mesh_of("tpu", "tpu"))
    assert not step_lib.steps_must_sync(mesh_of("gpu", "gpu", "gpu", "gpu"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_many_steps_on_two_cpu_devices_do_not_hang(tmp_path):
    # XLA:CPU's in-process all-reduce blocks a thread of the shared pool; with
    # steps dispatched back to back this small GPT hung within 1,500 steps on
    # 2 cores before the loop awaited each step (steps_must_sync). A hang
    # ends in XLA's abort after 40 s, or in this timeout.
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.gpt_shakespeare_char",
         f"--workdir={workdir}", "--preset=smoke", "--config.cpu_devices=2",
         "--config.train.num_steps=2000", "--config.train.log_every=1000",
         "--config.train.eval_every=100000",
         "--config.train.checkpoint_every=100000"],
        cwd=REPO, env=subprocess_env(extra={"XLA_FLAGS": ""}),
        capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rendezvous" not in proc.stderr.lower()
    assert "on 2 device(s)" in proc.stdout
    assert (workdir / "eval.json").is_file()


# --------------------------------------------------------------------------
# absl flags: --config files and names (ml_collections' config_flags), and
# --flagfile.


def _config_from(argv, experiment_name=None):
    flags, overrides = cli.parse_args(argv)
    experiment, preset = cli._experiment_and_preset(experiment_name, flags)
    return experiment, preset, cli.build_config(experiment, preset, overrides, flags)


def test_config_file_is_loaded_by_config_flags_and_overridden():
    path = REPO / "experiments" / "vae_digits.py"
    experiment, preset, config = _config_from(
        [f"--config={path}:smoke", "--config.seed=3", "--workdir=/w"])
    assert (experiment.name, preset) == ("vae_digits", "smoke")
    reference = vae_digits.get_config("smoke")
    reference.seed = 3
    assert config.to_dict() == reference.to_dict()


def test_config_name_and_flagfile(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--config=vae_digits:smoke\n--config.train.num_steps=7\n"
                        "--workdir=/w\n", encoding="utf-8")
    experiment, preset, config = _config_from([f"--flagfile={flagfile}",
                                               "--config.seed=4"])
    assert (experiment.name, preset) == ("vae_digits", "smoke")
    assert config.train.num_steps == 7 and config.seed == 4
    flags, _ = cli.parse_args([f"--flagfile={flagfile}"])
    assert flags["workdir"] == "/w"


@pytest.mark.parametrize("argv, module, texts", [
    (["--config=experiments/nope.py:cpu"], None, ["nope.py", "no such file"]),
    (["--config=experiments/vae_digits.py:tiny"], None,
     ["'tiny'", "smoke", "cpu", "paper"]),
    (["--config=experiments/vae_digits.py"], None, ["names no preset"]),
    (["--config=vae_digits:smoke"], "vae_mnist", ["vae_digits", "vae_mnist"]),
    (["--config=vae_digits:smoke", "--preset=cpu"], None, ["contradicts"]),
    (["--flagfile=/no/such/file"], None, ["--flagfile"]),
])
def test_config_flag_mistakes_are_one_line(argv, module, texts, tmp_path, capsys,
                                           monkeypatch):
    monkeypatch.chdir(REPO)
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, module, [*argv, f"--workdir={workdir}"])
    assert code == 2
    assert_one_error_line(err, *texts)
    assert not workdir.exists()
