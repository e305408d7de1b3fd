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
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

LAYERS, HEADS, WIDTH, BLOCK, BATCH = 4, 4, 128, 64, 12
DEFAULT_TEXT = (pathlib.Path(__file__).resolve().parents[2].parent
                / "shared" / "data" / "tiny_shakespeare" / "input.txt")


def main(argv: list[str]) -> int:
    try:
        import torch  # pylint: disable=import-outside-toplevel
        import torch.nn as nn  # pylint: disable=import-outside-toplevel
        import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("error: torch is not installed; pip install torch (a CPU wheel is enough)",
              file=sys.stderr)
        return 2
    flags = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--"))
    unknown = set(flags) - {"compile", "steps", "text", "train", "seed"}
    if unknown or any(not a.startswith("--") for a in argv):
        print(f"error: unknown arguments {sorted(unknown) or argv}; valid: "
              "--compile, --steps=N, --text=PATH, --train, --seed=S", file=sys.stderr)
        return 2
    path = pathlib.Path(flags.get("text") or DEFAULT_TEXT)
    if not path.is_file():
        print(f"error: no text file at {path}; pass --text=PATH to input.txt",
              file=sys.stderr)
        return 2
    steps = int(flags.get("steps") or 100)

    torch.manual_seed(int(flags.get("seed") or 0))
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = {c: i for i, c in enumerate(chars)}
    vocab = len(chars)
    data = np.array([ids[c] for c in text[:int(len(text) * 0.9)]], np.int64)
    val = np.array([ids[c] for c in text[int(len(text) * 0.9):]], np.int64)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(WIDTH, bias=False)
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
            self.proj = nn.Linear(WIDTH, WIDTH, bias=False)
            self.ln_2 = nn.LayerNorm(WIDTH, bias=False)
            self.fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
            self.out = nn.Linear(4 * WIDTH, WIDTH, bias=False)

        def forward(self, x):
            b, t, c = x.shape
            heads = [z.view(b, t, HEADS, c // HEADS).transpose(1, 2)
                     for z in self.qkv(self.ln_1(x)).split(WIDTH, dim=2)]
            y = F.scaled_dot_product_attention(*heads, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
            return x + self.out(F.gelu(self.fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, WIDTH)
            self.wpe = nn.Embedding(BLOCK, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.ln_f = nn.LayerNorm(WIDTH, bias=False)
            self.head = nn.Linear(WIDTH, vocab, bias=False)
            self.wte.weight = self.head.weight  # tied

        def forward(self, x, y):
            h = self.wte(x) + self.wpe(torch.arange(x.shape[1]))
            for block in self.blocks:
                h = block(h)
            logits = self.head(self.ln_f(h))
            return F.cross_entropy(logits.view(-1, vocab), y.view(-1))

    model = GPT()
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
        return _train(torch, model, optimizer, params, get_batch, val)

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


def _train(torch, model, optimizer, params, get_batch, val) -> int:
    """nanoGPT's cpu run, then the validation loss over the whole text."""
    import math  # pylint: disable=import-outside-toplevel

    iters, warmup, lr, min_lr = 2000, 100, 1e-3, 1e-4
    t0 = time.perf_counter()
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
    seconds = time.perf_counter() - t0
    model.eval()
    windows = (len(val) - 1) // BLOCK
    total = 0.0
    with torch.no_grad():
        for first in range(0, windows, 64):
            starts = range(first * BLOCK, min(first + 64, windows) * BLOCK, BLOCK)
            x = torch.stack([torch.from_numpy(val[i:i + BLOCK]) for i in starts])
            y = torch.stack([torch.from_numpy(val[i + 1:i + 1 + BLOCK]) for i in starts])
            total += model(x, y).item() * len(starts)
    print(f"torch {torch.__version__}: {iters} iterations in {seconds:.0f} s; "
          f"validation loss {total / windows:.4f} nats/char over {windows} windows "
          f"of {BLOCK}; last training loss {loss.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
