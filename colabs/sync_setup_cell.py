"""Copies colabs/setup_cell.py into the first code cell of every notebook.

    python colabs/sync_setup_cell.py          # rewrite the notebooks that differ
    python colabs/sync_setup_cell.py --check  # exit 1 if any notebook differs

The setup cell (install or locate genjax, define REPO_ROOT, SHARED_DATA and
IN_COLAB) is kept in one place, setup_cell.py, and each notebook's first code
cell is its exact text; tests/test_notebooks.py checks that they agree. Edit
setup_cell.py, never the cell in a notebook, then run this script. Only that
cell changes; the notebooks are written in nbformat's own layout (the one
Jupyter writes), so nothing else in them moves.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
SETUP_CELL = HERE / "setup_cell.py"


def setup_cell_source() -> str:
    """The text of the setup cell, exactly as every notebook must hold it."""
    return SETUP_CELL.read_text(encoding="utf-8")


def notebooks() -> list[pathlib.Path]:
    return sorted(HERE.glob("*.ipynb"))


def first_code_cell(nb):
    """The notebook's first code cell; ValueError if it has none."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            return cell
    raise ValueError("no code cell")


def sync(path: pathlib.Path, source: str, check: bool) -> bool:
    """Whether ``path``'s first code cell differed; rewrites it unless ``check``."""
    nb = nbformat.read(path, as_version=4)
    cell = first_code_cell(nb)
    if cell.source == source:
        return False
    if not check:
        cell.source = source
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a notebook differs")
    args = parser.parse_args(argv)
    source = setup_cell_source()
    differ = [p.name for p in notebooks() if sync(p, source, args.check)]
    if args.check:
        if differ:
            print(f"setup cell out of date in {', '.join(differ)}: "
                  "run python colabs/sync_setup_cell.py", file=sys.stderr)
            return 1
        print("setup cell up to date in every notebook")
        return 0
    print(f"updated: {', '.join(differ)}" if differ else "nothing to update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
