"""What a run writes besides checkpoints and metrics: samples and figures.

Every write is atomic (a temporary file, then a rename) and made by process
0 only, so several hosts never write the same file. What a task's samples
look like is the task's business (``Task.render_samples`` returns pictures
and texts by name); this module only puts them on disk and in TensorBoard.
"""

from __future__ import annotations

import json
import os

import numpy as np

from genjax.distributed import is_chief
from genjax.evaluate import images as image_lib


def write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_npy(path: str, array: np.ndarray) -> None:
    """Writes ``array`` as ``.npy`` atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def write_npz(path: str, **arrays) -> None:
    """Writes ``arrays`` as one ``.npz`` atomically: a killed run leaves the
    old file or none, never half of one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def evaluated_step(run_dir: str) -> int | None:
    """The step of the final evaluation in ``run_dir/eval.json`` (what a
    study's cached samples or scores of that run are keyed by)."""
    with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as f:
        return json.load(f).get("step")


def write_json(path: str, obj: dict) -> None:
    """Writes ``obj`` as indented JSON atomically, on the chief only."""
    if is_chief():
        write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_rendered(out_dir: str, rendered: dict, tag: str, *, step: int = 0,
                   writer=None) -> list[str]:
    """Writes each of ``rendered`` (name -> uint8 or [0, 1] float ``[H, W, C]``
    picture, or text) as ``<out_dir>/<name>_<tag>.png`` or ``.txt`` (or
    ``<name>.png``/``.txt`` when ``tag`` is empty), and to TensorBoard
    through ``writer`` if given. Returns the paths written (none off the
    chief)."""
    paths = []
    if not is_chief():
        return paths
    for name, content in rendered.items():
        stem = f"{name}_{tag}" if tag else name
        if isinstance(content, str):
            path = os.path.join(out_dir, stem + ".txt")
            write_text(path, content)
            if writer is not None:
                writer.write_text(step, name, content)
        else:
            picture = np.asarray(content)
            if picture.dtype != np.uint8:
                picture = (np.clip(picture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            path = os.path.join(out_dir, stem + ".png")
            image_lib.save_png(path, picture)
            if writer is not None:
                writer.write_image(step, name, picture)
        paths.append(path)
    return paths


def figures_of(task, params, dataset, key) -> dict:
    """The task's figures made from the first 32 test examples, as
    pictures by name (``Task.figures`` gives image strips)."""
    test = dataset.arrays("test")
    first = {k: v[:32] for k, v in test.items()}
    return {name: image_lib.make_grid(np.asarray(images), ncols=ncols)
            for name, (images, ncols) in task.figures(params, first, key).items()}
