"""genjax/tools/benchmark.py: runs in-process, reports sane numbers, exits 2 on misuse.

Only the shape and sanity of the report are checked here, never speed: speed
is what ``python -m genjax.tools.benchmark`` itself is for.
"""

from __future__ import annotations

import gzip
import json
import math
import pathlib
import subprocess
import sys

import pytest

# experiments/ is not an installed package: import it from the checkout.
ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from genjax.tools import benchmark, profiling  # noqa: E402  pylint: disable=wrong-import-position
from conftest import subprocess_env  # noqa: E402  pylint: disable=wrong-import-position


def _run(capsys, argv):
    code = benchmark.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_smoke_json_report(capsys):
    code, out, err = _run(capsys, ["vae_digits", "--preset=smoke", "--steps=3",
                                   "--warmup=1", "--json"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"--json must print one JSON object, got:\n{out}"
    r = json.loads(lines[0])

    assert r["experiment"] == "vae_digits" and r["preset"] == "smoke"
    assert r["steps"] == 3 and r["warmup"] == 1
    assert r["devices"]["count"] >= 1 and r["devices"]["kind"]
    assert r["global_batch_size"] == 64
    assert r["params"] > 0
    s = r["step_seconds"]
    for value in (r["compile_seconds"], r["lower_seconds"],
                  r["xla_compile_seconds"], s["median"], s["p10"], s["p90"],
                  r["batch_seconds_median"], r["pipelined_step_seconds_mean"],
                  r["examples_per_second"], r["flops_per_step"],
                  r["flops_per_step_per_device"],
                  r["achieved_flops_per_second"], r["peak_flops_per_second"]):
        assert isinstance(value, (int, float)) and math.isfinite(value)
        assert value > 0
    assert s["p10"] <= s["median"] <= s["p90"]
    assert r["compile_seconds"] == pytest.approx(
        r["lower_seconds"] + r["xla_compile_seconds"])
    assert r["examples_per_second"] == pytest.approx(64 / s["median"])
    assert r["flops_per_step"] == pytest.approx(
        r["flops_per_step_per_device"] * r["devices"]["count"])
    assert r["achieved_flops_per_second"] == pytest.approx(
        r["flops_per_step"] / s["median"])
    assert 0 < r["mfu"] < 1.5
    assert r["mfu"] == pytest.approx(
        r["achieved_flops_per_second"] / r["peak_flops_per_second"])
    assert math.isfinite(r["final_train_metrics"]["loss"])


def test_human_readable_block():
    # format_report on a fixed result: every measured line is there.
    result = {
        "experiment": "vae_digits", "preset": "cpu",
        "overrides": [["train.batch_size", "32"]],
        "devices": {"count": 1, "kind": "cpu", "platform": "cpu",
                    "processes": 1},
        "jax_version": "0.0", "compilation_cache_dir": None,
        "global_batch_size": 32, "params": 1234,
        "compile_seconds": 1.5, "lower_seconds": 0.5,
        "xla_compile_seconds": 1.0, "steps": 50, "warmup": 5,
        "step_seconds": {"median": 0.004, "p10": 0.003, "p90": 0.005},
        "batch_seconds_median": 0.001, "pipelined_step_seconds_mean": 0.0035,
        "steps_synced": False,
        "examples_per_second": 8000.0, "flops_per_step": 4e7,
        "flops_per_step_per_device": 4e7, "achieved_flops_per_second": 1e10,
        "peak_flops_per_second": 5e10,
        "peak": {"size": 2048, "devices": 1, "runs": 5},
        "mfu": 0.2, "host_load_per_cpu": 0.1,
    }
    text = benchmark.format_report(result)
    for expected in ("vae_digits --preset=cpu --config.train.batch_size=32",
                     "1 x cpu", "compile     1.50 s", "median 4.00 ms",
                     "p10 3.00 ms", "p90 5.00 ms", "8,000 examples/s",
                     "40.00 MFLOP/step", "10.00 GFLOP/s", "50.00 GFLOP/s",
                     "MFU         20.0%"):
        assert expected in text, f"{expected!r} not in:\n{text}"
    assert "note" not in text


def test_unknown_experiment_exits_2(capsys):
    code, out, err = _run(capsys, ["no_such_experiment", "--steps=3"])
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "no_such_experiment" in lines[0] and "vae_digits" in lines[0]


@pytest.mark.parametrize("argv, fragment", [
    ([], "experiment name"),
    (["vae_digits", "vae_mnist"], "experiment name"),
    (["vae_digits", "--steps=0"], "--steps=0"),
    (["vae_digits", "--warmup=x"], "--warmup=x"),
    (["vae_digits", "--workdir=/tmp/x"], "unknown flag --workdir"),
    (["vae_digits", "--preset=nope"], "unknown preset 'nope'"),
    (["vae_digits", "--config.train.nope=1"], "train.nope"),
    (["vae_digits", "--steps"], "--steps needs a value"),
    (["vae_digits", "--profile="], "--profile needs a directory"),
])
def test_usage_errors_exit_2(capsys, argv, fragment):
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment in lines[0]


def test_parse_argv_forms():
    name, flags, overrides = benchmark.parse_argv(
        ["--steps", "7", "vae_digits", "--json", "--config.train.batch_size=32",
         "--preset", "smoke"])
    assert name == "vae_digits"
    assert flags["steps"] == 7 and flags["warmup"] == 5
    assert flags["json"] is True and flags["preset"] == "smoke"
    assert overrides == [("train.batch_size", "32")]


class _Compiled:
    def __init__(self, analysis):
        self._analysis = analysis

    def cost_analysis(self):
        if isinstance(self._analysis, Exception):
            raise self._analysis
        return self._analysis


@pytest.mark.parametrize("analysis, expected", [
    ({"flops": 12.0, "bytes accessed": 3.0}, 12.0),
    ([{"flops": 5.0}], 5.0),
    ([], None),
    (None, None),
    ({"bytes accessed": 3.0}, None),
    ({"flops": -1.0}, None),
    (NotImplementedError("no cost model"), None),
])
def test_flops_from_cost_analysis(analysis, expected):
    assert profiling.flops_from_cost_analysis(_Compiled(analysis)) == expected


def test_loop_matmul_flops_restores_the_trips_xla_counts_once():
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    x, ws = jnp.ones((32, 16)), jnp.ones((5, 16, 16))
    one = 2 * 32 * 16 * 16  # one [32, 16] x [16, 16] matmul
    cases = {  # function -> (matmuls run, while-loops of unknown length)
        lambda x, ws: jnp.stack([x @ ws[i] for i in range(5)]): (5, 0),
        lambda x, ws: jax.lax.map(lambda w: x @ w, ws): (5, 0),
        lambda x, ws: jax.lax.map(
            lambda w: jax.lax.fori_loop(0, 3, lambda i, c: c @ w, x), ws): (15, 0),
        # Reverse mode through the map: each trip's forward and weight gradient.
        lambda x, ws: jax.grad(lambda ws: jnp.sum(jax.lax.map(
            lambda w: jnp.tanh(x @ w), ws)))(ws): (10, 0),
        lambda x, ws: jax.lax.while_loop(
            lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] @ ws[c[0]]), (0, x))[1]: (1, 1),
    }
    for f, (matmuls, unknown) in cases.items():
        jitted = jax.jit(f)
        xla = profiling.flops_from_cost_analysis(jitted.lower(x, ws).compile())
        loops = profiling.loop_matmul_flops(jitted.trace(x, ws).jaxpr)
        assert loops["unknown_loops"] == unknown
        # XLA's count (matmuls counted once, a few elementwise FLOPs) plus the
        # extra trips is every matmul the function runs.
        assert xla + loops["extra"] == pytest.approx(matmuls * one, rel=0.05)


def test_the_mixtures_em_step_is_charged_for_every_component(capsys):
    code, out, err = _run(capsys, ["gmm_mnist", "--preset=smoke", "--steps=2",
                                   "--warmup=1", "--json",
                                   "--config.data.name=digits"])
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["loop_flops_per_step"] > 0 and r["while_loops_counted_once"] == 0
    assert r["flops_per_step"] > r["loop_flops_per_step"]


def test_sampling_times_every_sampler_of_a_diffusion_task(capsys):
    code, out, err = _run(capsys, [
        "ddpm_toy2d", "--preset=smoke", "--steps=2", "--warmup=0",
        "--sampling=8", "--peak_size=256",
        "--config.eval.compare_samplers=('ddpm',)"])
    assert code == 0, err
    line = [l for l in out.splitlines() if l.strip().startswith("sampling")]
    assert len(line) == 1 and "ddim" in line[0] and "ddpm" in line[0], out
    assert "for 8 samples" in line[0]
    code, out, err = _run(capsys, ["ddpm_toy2d", "--preset=smoke", "--steps=2",
                                   "--warmup=0", "--sampling=4",
                                   "--peak_size=256", "--json",
                                   "--config.eval.compare_samplers=()"])
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert list(r["sampling_seconds"]) == ["ddim"]
    assert r["sampling_seconds"]["ddim"] > 0 and r["sampling_num_samples"] == 4
    code, _, err = _run(capsys, ["ddpm_toy2d", "--sampling=-1"])
    assert code == 2 and "--sampling=-1 must be >= 0" in err


@pytest.mark.parametrize("name, kind", [
    ("ynn_fusion.12", "matmul"), ("dot.3", "matmul"), ("convolution", "matmul"),
    ("all-reduce.29", "collective"), ("all-gather-start.1", "collective"),
    ("multiply_add_fusion.4", "other"), ("copy_bitcast_fusion", "other"),
    ("transpose_copy_fusion.38", "other"),
    ("convert_fusion.2", "other"), ("convolution.7", "matmul"),
])
def test_op_kind(name, kind):
    assert profiling.op_kind(name) == kind


_HLO = """HloModule jit_step
ENTRY %main {
  %ynn_fusion.1 = f32[4,4]{1,0} fusion(%a, %b), metadata={op_name="jit(step)/jvp(GPT)/mlp/fc/dot_general"}
  %all-reduce.2 = f32[4]{0} all-reduce(%c), metadata={op_name="jit(step)/psum"}
  ROOT %add_fusion.3 = f32[4]{0} fusion(%d)
}
"""


def test_summarize_trace_sums_hlo_ops_per_step_and_device(tmp_path):
    # Two steps on two devices: each op's event durations (us) summed, then
    # divided by 2 x 2; runtime events (not HLO instructions) are left out.
    events = [{"ph": "X", "name": "ynn_fusion.1", "dur": 1000}] * 4 + [
        {"ph": "X", "name": "all-reduce.2", "dur": 400}] * 4 + [
        {"ph": "X", "name": "add_fusion.3", "dur": 200}] * 4 + [
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 99999},
        {"ph": "M", "name": "ynn_fusion.1", "dur": 99999}]
    run_dir = tmp_path / "plugins" / "profile" / "run"
    run_dir.mkdir(parents=True)
    with gzip.open(run_dir / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    p = profiling.summarize_trace(str(tmp_path), _HLO, steps=2, devices=2)
    assert p["steps"] == 2 and p["ops_per_step"] == 3
    assert p["kind_seconds"] == pytest.approx(
        {"matmul": 1e-3, "collective": 4e-4, "other": 2e-4})
    assert [op["name"] for op in p["top"]] == [
        "ynn_fusion.1", "all-reduce.2", "add_fusion.3"]
    assert p["top"][0]["source"] == "jit(step)/jvp(GPT)/mlp/fc/dot_general"
    assert p["top"][2]["source"] == ""
    with pytest.raises(FileNotFoundError, match="trace.json.gz"):
        profiling.summarize_trace(str(tmp_path / "empty"), _HLO, 1, 1)


def test_profile_path_that_is_a_file_exits_2_and_keeps_the_file(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    code, out, err = _run(capsys, ["vae_digits", "--preset=smoke",
                                   f"--profile={path}"])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --profile=")
    assert "name a directory" in lines[0]
    assert path.read_text() == "keep me"


@pytest.mark.subprocess
def test_profile_flag_traces_the_real_step(tmp_path):
    # In a process of its own with XLA's default flags: the suite compiles
    # at LLVM's optimisation level 0 (conftest.py), where the profile of
    # unoptimised code would rank other ops above the matmuls.
    proc = subprocess.run(
        [sys.executable, "-m", "genjax.tools.benchmark",
         "vae_digits", "--preset=smoke", "--steps=3", "--warmup=1",
         "--peak_size=256", f"--profile={tmp_path}", "--json"],
        cwd=ROOT, env=subprocess_env(extra={"XLA_FLAGS": ""}),
        capture_output=True, text=True, timeout=300, check=False)
    code, out, err = proc.returncode, proc.stdout, proc.stderr
    assert code == 0, err
    p = json.loads(out.strip().splitlines()[-1])["profile"]
    assert p["steps"] == 3 and pathlib.Path(p["trace"]).is_file()
    assert p["kind_seconds"]["matmul"] > 0 and p["ops_per_step"] > 5
    assert p["top"] and all(op["seconds"] > 0 for op in p["top"])
    assert any("dot_general" in op["source"] for op in p["top"])
    assert 0 < sum(p["kind_seconds"].values()) <= p["step_seconds"] * 1.5
    text = benchmark.format_report(dict(
        json.loads(out.strip().splitlines()[-1]), experiment="vae_digits"))
    assert "profile" in text and "matmul" in text and "trace:" in text
