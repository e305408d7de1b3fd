"""The PyTorch yardstick for ``gpt_shakespeare_char``'s training step.

    python -m genjax.tools.torch_baseline [--compile] [--steps=N] [--text=PATH]
    python -m genjax.tools.torch_baseline --train [--seed=S] [--text=PATH]

Times one training iteration of a PyTorch GPT shaped like karpathy/nanoGPT's
``model.py`` with the ``cpu`` preset's sizes (4 layers, 4 heads, width 128,
block 64, batch 12, no biases, tied head, exact GELU,
``F.scaled_dot_product_attention``), trained as nanoGPT's ``train.py`` does:
random windows from the training text (data loading included), forward,
cross-entropy, backward, clipping at 1.0, AdamW (beta2 0.99, decay 0.1 on
matrices). It exists so that "as fast as PyTorch on this machine" is measured
back to back with ``python -m genjax.tools.benchmark gpt_shakespeare_char``,
not quoted. Needs ``torch`` (not a genjax dependency; a CPU wheel is enough).
Prints the median, p10 and p90 of ``--steps`` iterations after 30 untimed.

``--train`` instead runs nanoGPT's whole ``cpu`` recipe in PyTorch (2,000
iterations, warmup 100, cosine from 1e-3 to 1e-4) and scores the validation
text (the last 10%) as ``gpt_shakespeare_char`` does, once per character in
consecutive windows of 64: the same-machine reference for its validation loss.
With ``--curve=PATH`` (and ``--every=N``, default 100) it also copies the
parameters every N iterations and at the last, with the wall time since the
clock started (before the model is built), scores every copy the same way
after training, off the clock, and writes ``{"points": [{"step", "seconds",
"loss"}, ...], ...}`` as JSON to PATH: the PyTorch curve of
``python -m experiments.time_to_loss``.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np

LAYERS, HEADS, WIDTH, BLOCK, BATCH = 4, 4, 128, 64, 12
DEFAULT_TEXT = (pathlib.Path(__file__).resolve().parents[2].parent
                / "shared" / "data" / "tiny_shakespeare" / "input.txt")


def nanogpt(torch, vocab: int, layers: int, heads: int, width: int, block: int):
    """nanoGPT's ``GPT`` (``model.py``) without biases: learned positions,
    pre-LayerNorm blocks of causal attention (``F.scaled_dot_product_attention``)
    and an exact-GELU MLP, a head tied to the token embedding. ``model(idx,
    targets)`` is the mean cross-entropy; ``model(idx)`` the logits of the
    last position (nanoGPT's inference path, ``[B, 1, vocab]``);
    ``model(idx, all_positions=True)`` every position's."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(width, bias=False)
            self.qkv = nn.Linear(width, 3 * width, bias=False)
            self.proj = nn.Linear(width, width, bias=False)
            self.ln_2 = nn.LayerNorm(width, bias=False)
            self.fc = nn.Linear(width, 4 * width, bias=False)
            self.out = nn.Linear(4 * width, width, bias=False)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = [z.view(b, t, heads, c // heads).transpose(1, 2)
                       for z in self.qkv(self.ln_1(x)).split(width, dim=2)]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
            return x + self.out(F.gelu(self.fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, width)
            self.wpe = nn.Embedding(block, width)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(width, bias=False)
            self.head = nn.Linear(width, vocab, bias=False)
            self.wte.weight = self.head.weight  # tied

        def forward(self, idx, targets=None, all_positions=False):
            h = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                h = blk(h)
            h = self.ln_f(h)
            if targets is None and not all_positions:
                h = h[:, [-1], :]
            logits = self.head(h)
            if targets is None:
                return logits
            return F.cross_entropy(logits.view(-1, vocab), targets.view(-1))

    return GPT()


def main(argv: list[str]) -> int:
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("error: torch is not installed; pip install torch (a CPU wheel is enough)",
              file=sys.stderr)
        return 2
    flags = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--"))
    unknown = set(flags) - {"compile", "steps", "text", "train", "seed", "curve", "every"}
    if unknown or any(not a.startswith("--") for a in argv):
        print(f"error: unknown arguments {sorted(unknown) or argv}; valid: "
              "--compile, --steps=N, --text=PATH, --train, --seed=S, --curve=PATH, "
              "--every=N", file=sys.stderr)
        return 2
    if "curve" in flags and "train" not in flags:
        print("error: --curve needs --train (it records the training run's curve)",
              file=sys.stderr)
        return 2
    try:
        every = int(flags.get("every") or 100)
        if every < 1:
            raise ValueError
    except ValueError:
        print(f"error: --every={flags['every']}: expected a positive int", file=sys.stderr)
        return 2
    path = pathlib.Path(flags.get("text") or DEFAULT_TEXT)
    if not path.is_file():
        print(f"error: no text file at {path}; pass --text=PATH to input.txt",
              file=sys.stderr)
        return 2
    steps = int(flags.get("steps") or 100)

    torch.manual_seed(int(flags.get("seed") or 0))
    clock = time.perf_counter()  # --curve: from before the model is built
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = {c: i for i, c in enumerate(chars)}
    vocab = len(chars)
    data = np.array([ids[c] for c in text[:int(len(text) * 0.9)]], np.int64)
    val = np.array([ids[c] for c in text[int(len(text) * 0.9):]], np.int64)

    model = nanogpt(torch, vocab, LAYERS, HEADS, WIDTH, BLOCK)
    # GPT-2 initialisation, as nanoGPT's _init_weights: N(0, 0.02), and the
    # two projections into the residual stream scaled by 1/sqrt(2 * layers).
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / (2 * LAYERS) ** 0.5 if name.endswith(("proj.weight", "out.weight")) else 0.02
            torch.nn.init.normal_(p, mean=0.0, std=std)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99))
    forward = torch.compile(model) if "compile" in flags else model

    def get_batch():
        starts = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([torch.from_numpy(data[i:i + BLOCK]) for i in starts])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + BLOCK]) for i in starts])
        return x, y

    if "train" in flags:
        return _train(torch, model, optimizer, params, get_batch, val,
                      curve=flags.get("curve"), every=every, clock=clock)

    times = []
    for _ in range(30 + steps):
        t0 = time.perf_counter()
        loss = forward(*get_batch())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times[30:]) * 1e3
    mode = "torch.compile" if "compile" in flags else "eager"
    print(f"torch {torch.__version__} ({mode}, {torch.get_num_threads()} threads): "
          f"median {np.median(ms):.2f} ms  p10 {np.percentile(ms, 10):.2f} ms  "
          f"p90 {np.percentile(ms, 90):.2f} ms per iteration "
          f"({steps} timed; batch {BATCH} x {BLOCK}); last loss {loss.item():.3f}")
    return 0


def _train(torch, model, optimizer, params, get_batch, val, *, curve=None,
           every: int = 100, clock: float | None = None) -> int:
    """nanoGPT's cpu run, then the validation loss over the whole text (and,
    with ``curve``, at every ``every`` iterations: see the module docstring)."""
    import copy  # pylint: disable=import-outside-toplevel
    import math  # pylint: disable=import-outside-toplevel

    iters, warmup, lr, min_lr = 2000, 100, 1e-3, 1e-4
    clock = time.perf_counter() if clock is None else clock
    t0 = time.perf_counter()
    snapshots = []
    for it in range(iters):
        if it < warmup:
            rate = lr * (it + 1) / (warmup + 1)
        else:
            ratio = (it - warmup) / (iters - warmup)
            rate = min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
        for group in optimizer.param_groups:
            group["lr"] = rate
        loss = model(*get_batch())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if curve and ((it + 1) % every == 0 or it + 1 == iters):
            snapshots.append((it + 1, time.perf_counter() - clock,
                              copy.deepcopy(model.state_dict())))
    seconds = time.perf_counter() - t0
    windows = (len(val) - 1) // BLOCK

    def validation_loss() -> float:
        model.eval()
        total = 0.0
        with torch.no_grad():
            for first in range(0, windows, 64):
                starts = range(first * BLOCK, min(first + 64, windows) * BLOCK, BLOCK)
                x = torch.stack([torch.from_numpy(val[i:i + BLOCK]) for i in starts])
                y = torch.stack([torch.from_numpy(val[i + 1:i + 1 + BLOCK]) for i in starts])
                total += model(x, y).item() * len(starts)
        model.train()
        return total / windows

    final = validation_loss()
    print(f"torch {torch.__version__}: {iters} iterations in {seconds:.0f} s; "
          f"validation loss {final:.4f} nats/char over {windows} windows "
          f"of {BLOCK}; last training loss {loss.item():.4f}")
    if curve:
        points = []
        for step, wall, state in snapshots:
            model.load_state_dict(state)
            points.append({"step": step, "seconds": wall, "loss": validation_loss()})
        pathlib.Path(curve).write_text(json.dumps({
            "recipe": "pytorch", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "train_seconds": seconds,
            "points": points}, indent=1))
        print(f"wrote {curve}: {len(points)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
