"""Every notebook in colabs/ runs top to bottom without an error, and their
shared setup cell does what colabs/README.md says.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, with
its own folder, colabs/, as its working directory (as Jupyter does; the
setup cell changes into the repository root) and ``GENJAX_NOTEBOOK_SMOKE=1``
in its environment (the notebooks then train for a few steps only), and
``GENJAX_NOTEBOOK_WORKDIR`` naming a fresh directory to train in.

The kernel: jupyter_client resolves ``python3`` to ipykernel's own kernel
spec when no kernel spec of that name is installed, and replaces an installed
spec's bare ``python`` with this interpreter (``sys.executable``), so the
notebook runs in the environment of the tests; no ``ipykernel install`` is
needed. Needs the test extra (nbclient, nbformat, ipykernel) and matplotlib.

The setup cell (colabs/setup_cell.py, the first code cell of every notebook)
is also run as plain Python in a subprocess, in each of its situations: in
the clone (nothing installed), in a simulated Colab with an archive or a git
URL as GENJAX_SOURCE (fetched; ``GENJAX_SETUP_DRY_RUN=1`` prints the pip
command instead of running it), and in a simulated Colab with nothing (a
one-line GenjaxSetupError). A wrapper records every subprocess the cell
starts, so "installs nothing" means "never ran pip".
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))
SETUP_CELL = ROOT / "colabs" / "setup_cell.py"
CELL_TIMEOUT = 900  # Seconds per cell; the smoke settings need far less.
SMOKE_ENV = "GENJAX_NOTEBOOK_SMOKE"
SETUP_ERROR = ("GenjaxSetupError: no genjax repository: set GENJAX_SOURCE in the "
               "first code cell")


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


def _execute(path, monkeypatch, tmp_path, data_dir=None):
    """Runs the notebook at ``path`` in smoke mode; returns it with outputs.

    ``data_dir``, if given, becomes ``$TFDS_DATA_DIR``, the data directory
    the notebooks cache their domain classifiers in: the suite's shared one
    holds the digit classifier the other tests trained."""
    _require("nbclient", "nbformat", "ipykernel", "matplotlib")
    import nbclient  # pylint: disable=import-outside-toplevel
    import nbformat  # pylint: disable=import-outside-toplevel

    nb = nbformat.read(path, as_version=4)
    # The kernel process inherits this environment.
    monkeypatch.setenv(SMOKE_ENV, "1")
    # Where the notebook trains (instead of a new directory under /tmp).
    monkeypatch.setenv("GENJAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    if data_dir is not None:
        monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError:
        # Keep the executed notebook, outputs and all, for inspection.
        out = tmp_path / path.name
        nbformat.write(nb, out)
        print(f"executed notebook with outputs: {out}")
        raise
    return nb


def _text(cell) -> str:
    """A code cell's printed output."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path, shared_data_dir):
    _execute(path, monkeypatch, tmp_path, shared_data_dir)


def test_transformer_skips_without_its_data(monkeypatch, tmp_path):
    """Without Tiny Shakespeare the data cell says so in one line and every
    later cell prints "skipped" instead of failing; nothing is trained."""
    empty = tmp_path / "empty_shared_data"
    empty.mkdir()
    monkeypatch.setenv("GENJAX_SHARED_DATA", str(empty))
    for name in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(name)  # No download: this is not Colab.
    nb = _execute(ROOT / "colabs" / "transformer.ipynb", monkeypatch, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert f"shared data: {empty}; Colab: False" in _text(code[0])
    data = next(i for i, c in enumerate(code) if "TEXT_DIR = DATA_DIR" in c.source)
    note = [line for line in _text(code[data]).splitlines() if line]
    assert len(note) == 1 and note[0].startswith("no Tiny Shakespeare"), note
    for cell in code[data + 1:]:
        assert _text(cell).startswith("skipped: "), cell.source
    assert not (tmp_path / "workdir" / "metrics.jsonl").exists()


# --------------------------------------------------------------------------
# The setup cell.


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_setup_cell(path):
    import nbformat  # pylint: disable=import-outside-toplevel

    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source == SETUP_CELL.read_text(encoding="utf-8"), (
        f"{path.name}: the first code cell differs from colabs/setup_cell.py; "
        "edit setup_cell.py and run python colabs/sync_setup_cell.py")


def test_sync_script_check_passes():
    done = subprocess.run([sys.executable, str(ROOT / "colabs" / "sync_setup_cell.py"),
                           "--check"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr


# Runs the setup cell (argv[1]) as plain Python, recording the command line of
# every subprocess it starts; prints RESULT {json} at the end, even on error.
_RUNNER = r"""
import json, os, subprocess, sys, types
calls = []
class RecordingPopen(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        calls.append([str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)])
        super().__init__(args, *rest, **kwargs)
subprocess.Popen = RecordingPopen
os.system = lambda command: calls.append([command]) or 1
if os.environ.get("FAKE_GOOGLE_COLAB"):
    sys.modules["google.colab"] = types.ModuleType("google.colab")
namespace = {"__name__": "__main__"}
try:
    exec(compile(open(sys.argv[1], encoding="utf-8").read(), "setup_cell", "exec"), namespace)
finally:
    print("RESULT " + json.dumps({
        "calls": calls, "cwd": os.getcwd(), "path0": sys.path[0],
        **{k: namespace.get(k) for k in ("REPO_ROOT", "SHARED_DATA", "IN_COLAB")}}))
"""


def _run_setup_cell(tmp_path, cwd, source="", colab=None, **env):
    """Runs the setup cell with ``GENJAX_SOURCE = source`` in ``cwd``.

    colab: None (not Colab), "env" (a COLAB_* variable) or "module" (a fake
    google.colab in sys.modules). env: extra environment variables. Returns
    (returncode, stdout, stderr, the RESULT dict).
    """
    text = SETUP_CELL.read_text(encoding="utf-8")
    assert text.count('\nGENJAX_SOURCE = ""\n') == 1
    cell = tmp_path / "cell.py"
    cell.write_text(text.replace('\nGENJAX_SOURCE = ""\n',
                                 f"\nGENJAX_SOURCE = {source!r}\n"), encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLAB_")
               and k not in ("GENJAX_SHARED_DATA", "GENJAX_SETUP_DRY_RUN")}
    if colab == "env":
        environ["COLAB_RELEASE_TAG"] = "test"
    elif colab == "module":
        environ["FAKE_GOOGLE_COLAB"] = "1"
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", _RUNNER, str(cell)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, (done.stdout, done.stderr)
    return done.returncode, done.stdout, done.stderr, json.loads(lines[-1][len("RESULT "):])


def _pip_calls(result):
    return [c for c in result["calls"] if any("pip" in a for a in c)]


def _real(path) -> str:
    return os.path.realpath(path)


def test_setup_cell_in_the_clone_installs_nothing(tmp_path):
    """A notebook opened from <clone>/colabs: neither pip nor git runs, the clone
    first on sys.path and the working directory; GENJAX_SOURCE unused."""
    rc, out, err, result = _run_setup_cell(
        tmp_path, ROOT / "colabs", source="https://example.invalid/genjax.git")
    assert rc == 0, err
    # Importing genjax (and jax) may start helpers; never pip, never git.
    assert not [c for c in result["calls"] if any("pip" in a or "git" in a for a in c)]
    assert "nothing installed" in out and "GENJAX_SOURCE is not used" in out
    assert result["REPO_ROOT"] == _real(ROOT)
    assert result["cwd"] == _real(ROOT) and result["path0"] == _real(ROOT)
    assert result["IN_COLAB"] is False
    shared = ROOT.parent / "shared" / "data"
    got = result["SHARED_DATA"]
    assert (got and os.path.realpath(got)) == (str(shared.resolve()) if shared.is_dir()
                                               else None)
    assert not (ROOT / "colabs" / "genjax").exists()


@pytest.mark.parametrize("override", ["missing", "empty"])
def test_setup_cell_shared_data_override(tmp_path, override):
    """GENJAX_SHARED_DATA wins over shared/data beside the clone; a path that
    is not a directory means no shared data (None)."""
    target = tmp_path / override
    if override == "empty":
        target.mkdir()
    rc, _, err, result = _run_setup_cell(tmp_path, ROOT, GENJAX_SETUP_DRY_RUN="1",
                                         GENJAX_SHARED_DATA=str(target))
    assert rc == 0, err
    assert result["SHARED_DATA"] == (str(target) if override == "empty" else None)
    assert _pip_calls(result) == []


def _archive(tmp_path, name, *args):
    path = tmp_path / name
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(path), *args, "HEAD"],
                   check=True, timeout=120)
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_setup_cell_in_colab_unpacks_an_archive(tmp_path, kind):
    """Simulated Colab, GENJAX_SOURCE an uploaded archive (git archive, files at
    the top or, as GitHub's zips, in one folder): unpacked into ./genjax and
    installed with pip install -e (dry run: the command is printed). No
    shared/data beside it: SHARED_DATA is None. A second run reuses it."""
    if kind == "zip":
        archive, colab = _archive(tmp_path, "genjax.zip"), "env"
    else:
        archive, colab = _archive(tmp_path, "genjax.tar.gz", "--prefix=genjax-main/"), "module"
    content = tmp_path / "content"
    content.mkdir()
    dest = content / "genjax"
    rc, out, err, result = _run_setup_cell(tmp_path, content, source=str(archive),
                                           colab=colab, GENJAX_SETUP_DRY_RUN="1")
    assert rc == 0, err
    assert (dest / "setup.py").is_file() and (dest / "genjax" / "__init__.py").is_file()
    assert not (content / "genjax.unpacking").exists()
    assert f"+ {sys.executable} -m pip install -q -e {_real(dest)}" in out
    assert "GENJAX_SETUP_DRY_RUN is set: pip not run" in out
    assert result["calls"] == []  # Dry run: pip was not started; no git either.
    assert result["REPO_ROOT"] == _real(dest)
    assert result["cwd"] == _real(dest) and result["path0"] == _real(dest)
    assert result["IN_COLAB"] is True
    assert result["SHARED_DATA"] is None

    # Again, as after a runtime restart: the unpacked copy is reused.
    rc, out, err, result = _run_setup_cell(tmp_path, content, source=str(archive),
                                           colab=colab, GENJAX_SETUP_DRY_RUN="1")
    assert rc == 0, err
    assert "fetched before" in out
    try:
        importlib.metadata.distribution("genjax-research")
        installed = True
    except importlib.metadata.PackageNotFoundError:
        installed = False
    assert ("pip install" in out) is not installed
    assert result["REPO_ROOT"] == _real(dest)


def test_setup_cell_in_colab_clones_a_git_url(tmp_path):
    """GENJAX_SOURCE a git URL with @branch: git clone --depth=1 --branch."""
    branch = subprocess.run(["git", "-C", str(ROOT), "symbolic-ref", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    if not branch:
        pytest.skip("the repository is on a detached HEAD")
    git_dir = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--absolute-git-dir"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if not git_dir.endswith(".git"):
        pytest.skip(f"the git directory {git_dir} does not end in .git")
    content = tmp_path / "content"
    content.mkdir()
    dest = content / "genjax"
    url = f"file://{git_dir}"
    rc, out, err, result = _run_setup_cell(tmp_path, content, source=f"{url}@{branch}",
                                           colab="env", GENJAX_SETUP_DRY_RUN="1")
    assert rc == 0, err
    assert result["calls"] == [["git", "clone", "--depth=1", "--branch", branch, url,
                                str(dest)]]
    assert (dest / "setup.py").is_file()
    assert f"-m pip install -q -e {_real(dest)}" in out
    assert result["REPO_ROOT"] == _real(dest)


def test_setup_cell_in_colab_without_a_source_stops_clearly(tmp_path):
    """Simulated Colab, no clone, GENJAX_SOURCE empty: one paragraph saying
    what to set, then a one-line GenjaxSetupError; nothing run."""
    outside = tmp_path / "content"
    outside.mkdir()
    rc, out, err, result = _run_setup_cell(tmp_path, outside, colab="env")
    assert rc == 1
    assert result["calls"] == []
    assert result["REPO_ROOT"] is None
    paragraph = " ".join(out.split("RESULT ")[0].split())
    for words in ("Set GENJAX_SOURCE", "git archive -o genjax.zip HEAD",
                  'GENJAX_SOURCE = "/content/genjax.zip"'):
        assert words in paragraph, paragraph
    assert err.strip().splitlines()[-1] == SETUP_ERROR
    assert list(outside.iterdir()) == []


def test_setup_cell_error_is_one_line_in_ipython():
    """IPython (Jupyter, Colab) shows GenjaxSetupError as its one line."""
    namespace = {}
    text = SETUP_CELL.read_text(encoding="utf-8")
    exec(text[text.index("class GenjaxSetupError"):text.index("def _genjax_setup")],  # noqa: S102
         namespace)
    error = namespace["GenjaxSetupError"]("a message")
    assert error._render_traceback_() == [  # pylint: disable=protected-access
        "GenjaxSetupError: a message"]
