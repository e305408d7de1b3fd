"""The language-model task: a GPT trained on next-token prediction.

p(x) = prod_i p(x_i | x_<i), learned by the causal transformer of
``genjax.models.transformer`` on random windows of a text
(``genjax.data.text``), as karpathy/nanoGPT trains it:

* objective: mean cross-entropy of the next token, in nats per token
  (``genjax.objectives.next_token``); logged with bits per character, and
  evaluation adds perplexity;
* optimiser: AdamW (decoupled weight decay) decaying only matrices, i.e. the
  dense kernels and the embedding tables, never biases or LayerNorm
  parameters; linear warmup then cosine decay to ``min_lr_ratio * lr``;
  clipping by global norm; gradient accumulation over
  ``train.grad_accum_steps`` micro-batches inside the one jitted step
  (``genjax.train.step.gradient_update``);
* evaluation: during training, ``eval.num_batches`` batches of random
  windows of the ``eval.split`` split from a fixed seed (nanoGPT's
  ``estimate_loss``, on the same windows every time); the final evaluation
  (and ``--mode=eval``) scores every token of that split once, in
  consecutive windows of ``block_size`` (``eval.final_protocol="full"``);
* samples: text, drawn with the key-value cache (``genjax.models.decoding``),
  written to ``samples/samples_<step>.txt``; ``--mode=sample --prompt=TEXT
  --max_new_tokens=N`` prints them. The tokenizer is saved in every
  checkpoint's data state, so sampling reads no dataset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax.config import ConfigError, check_choice
from genjax.data import text as text_lib
from genjax.models import decoding, transformer
from genjax.objectives import next_token
from genjax.tasks.base import Task
from genjax.train import step as step_lib
from genjax.train.state import MUON_LEARNING_RATE, MUON_MOMENTUM, build_optimizer

FINAL_PROTOCOLS = ("full", "random")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def base_config(data_name: str = "tiny_shakespeare") -> ml_collections.ConfigDict:
    """The config keys of every language-model experiment (nanoGPT's defaults)."""
    config = config_lib.base_config(data_name=data_name)
    # tfds (90/5/5) | nanogpt (90/10: validation = test = the last 10%).
    config.data.split_convention = "nanogpt"
    # Evaluation is sized by eval.num_batches of windows, not by examples.
    del config.eval["num_examples"]
    # Mixed precision is model.dtype here (float32 logits and loss).
    del config.train["compute_dtype"]

    m = config.model = ml_collections.ConfigDict()
    m.block_size = 256  # tokens of context
    m.num_layers = 6
    m.num_heads = 6
    m.width = 384
    m.dropout = 0.2
    m.use_bias = False  # nanoGPT's train.py default
    m.dtype = "float32"  # float32 | bfloat16 (computation; params stay float32)
    # Beyond GPT-2 (genjax.models.transformer; all off: nanoGPT's model).
    m.position = "learned"  # learned | rope
    m.qk_norm = False
    m.activation = "gelu"  # gelu | relu2
    m.tie_head = True
    m.remat = False  # recompute each block in the backward pass

    t = config.train
    t.optimizer = "adamw"
    t.learning_rate = 1e-3
    t.lr_schedule = "cosine"
    t.warmup_steps = 100
    t.min_lr_ratio = 0.1  # nanoGPT: min_lr = learning_rate / 10
    t.b1 = 0.9
    t.b2 = 0.99
    t.weight_decay = 0.1
    t.grad_clip_norm = 1.0
    # train.optimizer="muon": Muon (Jordan et al. 2024) on the blocks' matrices
    # at this peak rate, decayed by weight_decay; Adam (learning_rate, b1, b2)
    # on the embeddings, head and norms; both follow the same warmup and decay.
    t.muon_learning_rate = MUON_LEARNING_RATE
    t.muon_momentum = MUON_MOMENTUM
    # The batch of one optimiser step is split into this many micro-batches,
    # whose gradients are summed in the step (nanoGPT's
    # gradient_accumulation_steps; memory, not the result, changes with it).
    t.grad_accum_steps = 1

    e = config.eval
    e.split = "validation"
    e.batch_size = 64
    e.num_batches = 200  # random windows per evaluation during training
    e.final_protocol = "full"  # full: every token of eval.split | random

    s = config.sample
    s.num_samples = 4
    s.prompt = "\n"  # nanoGPT's sample.py default start
    s.max_new_tokens = 500
    s.temperature = 0.8
    s.top_k = 200
    s.top_p = 1.0
    return config


def smoke_preset(config: ml_collections.ConfigDict) -> None:
    """A two-layer model of width 32 on windows of 32, 20 steps."""
    m = config.model
    m.block_size, m.num_layers, m.num_heads, m.width, m.dropout = 32, 2, 2, 32, 0.0
    config.train.batch_size = 8
    config.train.warmup_steps = 5
    config_lib.smoke_schedule(config)
    config.eval.batch_size = 8
    config.eval.num_batches = 2
    config.sample.num_samples = 2
    config.sample.max_new_tokens = 40


OPTIMIZERS = ("adamw", "muon")


def decay_mask(params):
    """True for the parameters AdamW decays: every array with >= 2 dimensions
    (dense kernels, embedding tables), never biases or LayerNorm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def muon_dims(params):
    """Muon's share of the parameters (True): every matrix inside a block (the
    attention and MLP kernels, ``[in, out]``); the embeddings, the head and
    every vector are Adam's (False)."""
    def is_muon(path, p):
        return str(getattr(path[0], "key", "")).startswith("block_") and p.ndim == 2
    return jax.tree_util.tree_map_with_path(is_muon, params)


class LMTask(Task):
    """A GPT (Radford et al. 2019) on a text dataset, trained on next tokens.

    Config keys used: ``model.{block_size, num_layers, num_heads, width,
    dropout, use_bias, dtype, position, qk_norm, activation, tie_head,
    remat}``, ``train.{optimizer (adamw | muon), muon_learning_rate,
    muon_momentum, grad_accum_steps, weight_decay, ...}``,
    ``eval.{split, num_batches, final_protocol}``,
    ``sample.{prompt, max_new_tokens, temperature, top_k, top_p}``.
    """

    progress_keys = ("loss",)

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        if dataset_info.kind != "text":
            raise ConfigError(
                f"the language-model task needs a text dataset; data.name="
                f"{config.data.name!r} is of kind {dataset_info.kind!r} (try "
                "tiny_shakespeare or text_file:PATH)")
        m, t, e, s = config.model, config.train, config.eval, config.sample
        check_choice("model.dtype", m.dtype, tuple(DTYPES))
        check_choice("model.position", m.position, transformer.POSITIONS)
        check_choice("model.activation", m.activation, transformer.ACTIVATIONS)
        check_choice("eval.final_protocol", e.final_protocol, FINAL_PROTOCOLS)
        for key, value in (("model.block_size", m.block_size),
                           ("model.num_layers", m.num_layers),
                           ("model.num_heads", m.num_heads),
                           ("model.width", m.width),
                           ("train.grad_accum_steps", t.grad_accum_steps),
                           ("eval.num_batches", e.num_batches),
                           ("sample.max_new_tokens", s.max_new_tokens)):
            if value < 1:
                raise ConfigError(f"{key}={value} must be at least 1")
        if m.width % m.num_heads:
            raise ConfigError(
                f"model.width={m.width} is not divisible by model.num_heads="
                f"{m.num_heads}; choose a width that is a multiple of it")
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout={m.dropout} must be in [0, 1)")
        if t.batch_size % t.grad_accum_steps:
            raise ConfigError(
                f"train.batch_size={t.batch_size} is not divisible by "
                f"train.grad_accum_steps={t.grad_accum_steps}")
        try:
            decoding.check_sampling(s.temperature, s.top_k, s.top_p)
        except ValueError as err:
            raise ConfigError(f"sample.{err}") from None
        self.tokenizer = getattr(dataset_info, "tokenizer", None)
        self.model = transformer.GPT(
            vocab_size=int(dataset_info.num_classes), block_size=m.block_size,
            num_layers=m.num_layers, num_heads=m.num_heads, width=m.width,
            dropout=m.dropout, use_bias=m.use_bias, dtype=DTYPES[m.dtype],
            position=m.position, qk_norm=m.qk_norm, activation=m.activation,
            tie_head=m.tie_head, remat=m.remat)

    # ------------------------------------------------------------------
    # Data: windows instead of examples.

    def example_batch(self, dataset):
        del dataset
        return text_lib.example_batch(self.config.model.block_size)

    def make_train_iterator(self, dataset, seed, process_index, process_count):
        return text_lib.TextTrainIterator(
            dataset.arrays("train"), self.config.train.batch_size, seed,
            process_index, process_count, block_size=self.config.model.block_size,
            tokenizer=dataset.tokenizer)

    def eval_batches(self, dataset, batch_size, *, final):
        e = self.config.eval
        arrays = dataset.arrays(e.split)
        if final and e.final_protocol == "full":
            return text_lib.contiguous_eval_batches(
                arrays, batch_size, block_size=self.config.model.block_size)
        return text_lib.random_eval_batches(
            arrays, batch_size, block_size=self.config.model.block_size,
            num_batches=e.num_batches)

    # ------------------------------------------------------------------
    # Model, objective and optimiser.

    def init_params(self, rng, example_batch):
        return self.model.init(rng, jnp.asarray(example_batch["inputs"]),
                               train=False)["params"]

    def logits(self, params, tokens, rng=None, *, train: bool):
        rngs = {"dropout": rng} if train and self.config.model.dropout > 0 else None
        return self.model.apply({"params": params}, tokens, train=train, rngs=rngs)

    def loss_fn(self, params, batch, rng):
        logits = self.logits(params, batch["inputs"], rng, train=True)
        return next_token.loss(logits, batch["targets"])

    def make_optimizer(self):
        t = self.config.train
        check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
        return build_optimizer(t, decay_mask=decay_mask, muon_dims=muon_dims)

    def make_update(self, optimizer):
        return step_lib.gradient_update(
            self.loss_fn, optimizer, ema_decay=self.config.train.ema_decay,
            accum_steps=self.config.train.grad_accum_steps)

    # ------------------------------------------------------------------
    # Evaluation.

    def eval_fn(self, params, batch, rng, *, final):
        """Mean nats per token of each window ``[B]`` (every window has
        ``block_size`` targets, so the mean over windows is per token)."""
        del rng, final
        logits = self.logits(params, batch["inputs"], train=False)
        return {"loss": next_token.sequence_nats(logits, batch["targets"])}

    def summarize_eval(self, metrics):
        if "eval/loss" in metrics:
            for k, v in next_token.summary(metrics["eval/loss"]).items():
                metrics[f"eval/{k}"] = v
        return metrics

    # ------------------------------------------------------------------
    # Sampling.

    def prompt_tokens(self, tokenizer, prompt: str, num_samples: int) -> np.ndarray:
        """The prompt as int32 ``[num_samples, P]``; ConfigError names a
        character the vocabulary lacks."""
        if not prompt:
            raise ConfigError("sample.prompt is empty; give at least one character "
                              "(nanoGPT starts from a newline: --prompt='\\n')")
        try:
            ids = tokenizer.encode(prompt)
        except text_lib.DatasetError as err:
            raise ConfigError(f"sample.prompt: {err}") from None
        return np.tile(np.asarray(ids, np.int32)[None], (num_samples, 1))

    def generate(self, params, prompt, rng, max_new_tokens: int):
        """Continuations ``[B, max_new_tokens]`` of prompts ``[B, P]`` (traceable)."""
        s = self.config.sample
        return decoding.generate(self.model, params, prompt, rng,
                                 max_new_tokens=max_new_tokens,
                                 temperature=s.temperature, top_k=s.top_k,
                                 top_p=s.top_p)

    def sample_fn(self, params, rng, num_samples):
        """Token continuations of ``sample.prompt``, int32 ``[N, max_new_tokens]``."""
        prompt = self.prompt_tokens(self.tokenizer, self.config.sample.prompt,
                                    num_samples)
        return self.generate(params, jnp.asarray(prompt), rng,
                             self.config.sample.max_new_tokens)

    def samples_as_text(self, samples) -> str:
        """Each continuation after the prompt, under a ``--- sample i ---`` line."""
        prompt = self.config.sample.prompt
        parts = [f"--- sample {i} ---\n{prompt}{self.tokenizer.decode(row)}"
                 for i, row in enumerate(np.asarray(samples))]
        return "\n".join(parts) + "\n"

    def render_samples(self, samples, dataset):
        del dataset
        return {"samples": self.samples_as_text(samples)}

    def default_num_samples(self) -> int:
        return self.config.sample.num_samples


def num_params(params) -> int:
    """The parameter count as nanoGPT prints it (without position embeddings)."""
    return transformer.num_params(params, exclude_positions=True)


__all__ = ["LMTask", "base_config", "smoke_preset", "decay_mask", "num_params"]
