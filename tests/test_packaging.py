"""genjax installs as a package with its experiments: ``python -m
experiments.<name>`` works outside the clone after ``pip install``, and a
wheel carries the experiments and the tools."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.subprocess


def _env_without_the_clone() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_experiments_run_from_outside_the_clone(tmp_path):
    """The installed package (``pip install -e .`` in CI), not the working
    directory, provides ``experiments``."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.vae_digits", "--help"],
        cwd=tmp_path, env=_env_without_the_clone(), capture_output=True,
        text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"{proc.stderr}\n(reinstall with pip install -e . if setup.py changed)")
    assert "presets: smoke, cpu, paper" in proc.stdout


def test_wheel_holds_experiments_and_tools(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
         str(tmp_path), str(REPO)], capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("genjax_research-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("experiments/__init__.py", "experiments/__main__.py",
                 "experiments/vae_digits.py", "genjax/tools/benchmark.py",
                 "genjax/train/loop.py"):
        assert path in names, path
    assert not any(n.startswith("tests/") for n in names)
