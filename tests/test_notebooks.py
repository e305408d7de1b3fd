"""Every notebook in colabs/ runs top to bottom without an error.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, with
the repository root as its working directory and ``GENJAX_NOTEBOOK_SMOKE=1``
in its environment (the notebooks then train for a few steps only), and
``GENJAX_NOTEBOOK_WORKDIR`` naming a fresh directory to train in.

The kernel: jupyter_client resolves ``python3`` to ipykernel's own kernel
spec when no kernel spec of that name is installed, and replaces an installed
spec's bare ``python`` with this interpreter (``sys.executable``), so the
notebook runs in the environment of the tests; no ``ipykernel install`` is
needed. Needs the test extra (nbclient, nbformat, ipykernel) and matplotlib.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
CELL_TIMEOUT = 900  # Seconds per cell; the smoke settings need far less.
SMOKE_ENV = "GENJAX_NOTEBOOK_SMOKE"


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"the notebook tests need {', '.join(missing)}: "
                    "pip install -e '.[test]' matplotlib")


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found under {ROOT / 'colabs'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    import nbformat  # pylint: disable=import-outside-toplevel

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: clear the outputs of cells {dirty} "
                       "before committing (Edit > Clear all outputs)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    _require("nbclient", "nbformat", "ipykernel", "matplotlib")
    import nbclient  # pylint: disable=import-outside-toplevel
    import nbformat  # pylint: disable=import-outside-toplevel

    nb = nbformat.read(path, as_version=4)
    # The kernel process inherits this environment.
    monkeypatch.setenv(SMOKE_ENV, "1")
    # Where the notebook trains (instead of a new directory under /tmp).
    monkeypatch.setenv("GENJAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError:
        # Keep the executed notebook, outputs and all, for inspection.
        out = tmp_path / path.name
        nbformat.write(nb, out)
        print(f"executed notebook with outputs: {out}")
        raise
