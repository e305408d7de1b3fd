"""Shared fixtures and helpers of the genjax core tests.

In-process tests run JAX on one CPU device with implicit rank promotion
turned into an error, so a silent broadcast in library code fails a test.
Runs that need several devices, a real exit code or a SIGKILL go through a
subprocess (``run_python``); each costs a JAX import, so they are few.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pathlib
import subprocess
import sys

# Before JAX is imported anywhere: the tests compare numbers bitwise between
# this process and subprocesses, so both must run on the same platform.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, shared by this process, every
# subprocess and every notebook kernel the tests start (they inherit the
# environment): the same smoke steps are compiled in many of them. Keyed by
# JAX's version and the program, so a stale entry is never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.expanduser("~"), ".cache", "genjax", "jax_compilation_cache_tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite is dominated by compiling small programs, not by running them:
# LLVM's optimisation level 0 compiles a smoke U-Net step about a third
# faster and runs the few longer loops (a domain classifier's training) about
# as fast. Every process of the suite (subprocesses and notebook kernels
# inherit it) uses the same level, so bitwise comparisons between them hold.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        f for f in (os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS) if f)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments import vae_digits  # noqa: E402  isort:skip
from genjax import cli  # noqa: E402  isort:skip
from genjax.train import loop  # noqa: E402  isort:skip

MAKE_TASK = vae_digits.EXPERIMENT.make_task


MARKERS = {
    "slow": "takes more than ~20 s on a 2-core CPU",
    "subprocess": "starts Python subprocesses (exit codes, kills, several devices)",
    "notebook": "executes a notebook in colabs/",
    "needs_data": "reads ../shared/data (skipped with a reason when absent)",
}


def pytest_configure(config):
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist's ``--dist loadgroup``: a test module's tests
    run in one worker, so its module- and session-scoped runs (``gan_run``,
    ``ddpm_run``, ...) are trained once; each notebook is a group of its own,
    so the notebooks spread over the workers. ``tryfirst``: xdist reads the
    groups in its own hook of this name, which must see these marks (without
    it every module's tests spread over both workers, and each worker set up
    the module's fixtures again)."""
    del config
    for item in items:
        group = item.module.__name__
        if item.get_closest_marker("notebook") is not None and hasattr(item, "callspec"):
            group = f"{group}[{item.callspec.id}]"
        item.add_marker(pytest.mark.xdist_group(group))


def needs_data(present: bool, reason: str):
    """Marks a test ``needs_data`` and skips it with ``reason`` unless the
    files it reads from ``../shared/data`` are ``present``."""
    def mark(test):
        return pytest.mark.needs_data(
            pytest.mark.skipif(not present, reason=reason)(test))
    return mark


@pytest.fixture
def collect_garbage():
    """Finalises, inside the test that made them, the tensorstore objects that
    reading a deliberately damaged checkpoint leaves (else they are
    finalised later, with a long repr, as "unraisable" warnings)."""
    yield
    gc.collect()


# For test modules that damage checkpoints on purpose.
DAMAGED_CHECKPOINT_MARKS = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.usefixtures("collect_garbage"),
]


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory):
    """One ``config.data.data_dir`` for the whole suite: the domain
    classifiers that the sample-quality tests of every family need are
    trained once into it and loaded from it afterwards."""
    return tmp_path_factory.mktemp("genjax_data_dir")


# --------------------------------------------------------------------------
# Configs and in-process runs.


def digits_config(preset: str = "smoke", **overrides):
    """vae_digits' config for ``preset`` with ``{"train.num_steps": 20}``-style
    overrides given as Python values (set directly, type-checked by
    ml_collections)."""
    return set_overrides(vae_digits.get_config(preset), overrides)


def set_overrides(config, overrides: dict):
    """Sets ``{"train.num_steps": 20}``-style keys of ``config``; returns it."""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        setattr(node, leaf, value)
    return config


# The smaller run most training tests share: 20 steps, a logged row every 2
# steps, checkpoints at 10 and 20, one evaluation during training.
SHORT = {"train.num_steps": 20, "train.log_every": 2,
         "train.checkpoint_every": 10, "train.eval_every": 10}


def short_config(**overrides):
    return digits_config("smoke", **{**SHORT, **overrides})


def train(config, workdir) -> dict:
    """``train_and_evaluate`` in this process (one CPU device)."""
    assert jax.device_count() == 1, "in-process runs expect one CPU device"
    return loop.train_and_evaluate(config, str(workdir), MAKE_TASK)


def restore_latest(config, workdir, make_task=MAKE_TASK):
    """``(step, host TrainState, data_state)`` of the newest checkpoint, read
    with the Checkpointer onto this process's (one) device."""
    run = loop.build(config, str(workdir), make_task)
    try:
        restored = run.checkpointer.restore_latest(run.abstract_state)
    finally:
        run.checkpointer.close()
    assert restored is not None, f"no checkpoint in {workdir}"
    step, state, data_state, _ = restored
    return step, jax.device_get(state), data_state


def leaves_with_paths(tree) -> dict[str, np.ndarray]:
    """``{key path: numpy array}`` of every leaf of ``tree``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def assert_trees_bitwise_equal(a, b) -> None:
    la, lb = leaves_with_paths(a), leaves_with_paths(b)
    assert la.keys() == lb.keys()
    for key in la:
        assert la[key].dtype == lb[key].dtype, key
        assert la[key].shape == lb[key].shape, key
        assert la[key].tobytes() == lb[key].tobytes(), f"{key} differs"


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def data_config(name, **extra):
    """Returns a config.data block as experiments build it."""
    config = ml_collections.ConfigDict({"name": name, "data_dir": None,
                                        "manual_dir": None})
    for key, value in extra.items():
        config[key] = value
    return config


def pairs(images_array, labels):
    """The multiset of (image bytes, label) pairs, order-free."""
    flat = np.ascontiguousarray(images_array).reshape(len(images_array), -1)
    return sorted(zip((row.tobytes() for row in flat), (int(v) for v in labels)))


# --------------------------------------------------------------------------
# The command line.


def run_cli(capsys, name: str, argv: list[str]) -> tuple[int, str, str]:
    """``genjax.cli.run`` in this process: ``(code, stdout, stderr)``.

    ``cli.run`` reconfigures logging to print to the (captured) stdout; the
    root logger's handlers and levels are put back afterwards so that later
    tests do not log into a closed capture stream.
    """
    root = logging.getLogger()
    saved = (root.handlers[:], root.level,
             {n: logging.getLogger(n).level
              for n in ("genjax", "absl", "orbax", "jax._src")})
    capsys.readouterr()
    try:
        code = cli.run(name, argv)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for logger_name, level in saved[2].items():
            logging.getLogger(logger_name).setLevel(level)
    out, err = capsys.readouterr()
    return code, out, err


def run_python(args: list[str], *, devices: int = 1, timeout: float = 300,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository root with ``devices`` CPU devices."""
    return subprocess.run([sys.executable, *args], env=subprocess_env(devices, env),
                          cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def subprocess_env(devices: int = 1, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (f"{TEST_XLA_FLAGS} "
                        f"--xla_force_host_platform_device_count={devices}")
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
    return env


def assert_one_error_line(stderr: str, *must_contain: str) -> str:
    """stderr is exactly one line ``error: ...`` naming every ``must_contain``."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for text in must_contain:
        assert text in line, f"{text!r} not in {line!r}"
    return line


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """One finished in-process run of ``short_config()`` (seed 0), shared.

    Tests must not modify it: copy it first (``copy_workdir``).
    """
    workdir = tmp_path_factory.mktemp("short_run") / "wd"
    metrics = train(short_config(), workdir)
    return workdir, metrics


@pytest.fixture
def copy_workdir(tmp_path):
    """``copy_workdir(src) -> a fresh copy under this test's tmp_path``."""
    import shutil  # pylint: disable=import-outside-toplevel

    counter = [0]

    def copy(src):
        counter[0] += 1
        dst = tmp_path / f"copy{counter[0]}"
        shutil.copytree(src, dst)
        return dst

    return copy
