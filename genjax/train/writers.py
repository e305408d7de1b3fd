"""Outputs of a run: metrics.jsonl, TensorBoard events, PNGs, progress."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

import numpy as np

from genjax.distributed import is_chief

log = logging.getLogger("genjax")


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; images and text to TensorBoard.

    Only process 0 writes. ``metrics.jsonl`` has one JSON object per logged
    step: ``{"step": s, "train/loss": ..., "eval/...": ...}``.
    """

    def __init__(self, workdir: str, *, resume_step: int | None = None):
        self._active = is_chief()
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self._active:
            return
        if resume_step is not None:
            _truncate_after(self.path, resume_step)
        else:
            _set_aside(self.path)
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self._active:
            return
        row = {"step": int(step)}
        row.update({k: _to_json_number(v) for k, v in sorted(scalars.items())})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in scalars.items():
            self._tb.add_scalar(key, float(value), int(step))
        self._tb.flush()

    def write_image(self, step: int, tag: str, image_hwc: np.ndarray) -> None:
        """``image_hwc``: uint8 ``[H, W, C]``."""
        if not self._active:
            return
        self._tb.add_image(tag, image_hwc, int(step), dataformats="HWC")
        self._tb.flush()

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Text (e.g. a language model's samples) for TensorBoard's text tab."""
        if not self._active:
            return
        # TensorBoard renders markdown; a code block keeps line breaks.
        self._tb.add_text(tag, "```\n" + text + "\n```", int(step))
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _to_json_number(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)


def _set_aside(path: str) -> None:
    """A fresh run (no checkpoint to resume) in a workdir that holds another
    run's ``metrics.jsonl`` (e.g. one whose checkpoints were set aside as
    damaged) renames it ``metrics.jsonl.N`` instead of appending to it or
    deleting it."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    n = 1
    while os.path.exists(f"{path}.{n}"):
        n += 1
    os.replace(path, f"{path}.{n}")
    log.warning("a fresh run in this workdir: kept the earlier %s as %s",
                os.path.basename(path), f"{os.path.basename(path)}.{n}")


def _truncate_after(path: str, step: int) -> None:
    """Drops rows logged after ``step`` by a run that was then interrupted.

    The resumed run recomputes exactly those rows (bitwise, on CPU), so the
    file ends up as an uninterrupted run's would.
    """
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue  # A half-written last line from a killed process.
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)


class Progress:
    """A tqdm bar on a terminal; plain log lines every ``log_every`` otherwise."""

    def __init__(self, start: int, total: int, log_every: int):
        self._start, self._total, self._log_every = start, total, log_every
        self._t0 = time.perf_counter()
        self._bar = None
        if sys.stderr.isatty() and is_chief():
            from tqdm import tqdm  # pylint: disable=import-outside-toplevel
            self._bar = tqdm(total=total, initial=start, unit="step",
                             dynamic_ncols=True)

    def update(self, step: int, values: dict[str, float] | None = None) -> None:
        """Called after each step (``step`` = steps done); cheap."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if values:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()},
                                      refresh=False)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Called at log steps with the scalars to show (e.g. ``{'loss': x}``):
        a plain line when there is no bar."""
        if self._bar is not None:
            self.update(step, values)
            return
        elapsed = time.perf_counter() - self._t0
        rate = (step - self._start) / max(elapsed, 1e-9)
        eta = (self._total - step) / rate if rate > 0 else float("inf")
        shown = "  ".join(f"{k} {v:.5g}" for k, v in values.items())
        log.info("step %d/%d  %s  %.1f steps/s  eta %s", step, self._total,
                 shown, rate, _fmt_seconds(eta))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
