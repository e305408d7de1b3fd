"""Character-level text: a tokenizer, the text datasets and training windows.

The char-level language-modelling setup of Karpathy's char-rnn and nanoGPT
(``karpathy/nanoGPT``, ``data/shakespeare_char/prepare.py``): every character
is one token, the vocabulary is the sorted set of characters of the text, and
a model is trained on random windows of ``block_size + 1`` consecutive tokens
(inputs: the first ``block_size``; targets: the same shifted by one).

Datasets (kind ``"text"``):

* ``tiny_shakespeare``: the TFDS name. char-rnn's ``input.txt`` (1,115,394
  characters, 65 distinct), read from ``config.data.manual_dir``, the
  directory holding ``input.txt`` (or the file itself), e.g.
  ``../shared/data/tiny_shakespeare``. No TensorFlow, no TFDS and no download:
  TFDS's builder stores the file's text unchanged, one example per split, so
  reading the file and splitting it with TFDS's rule gives the same text.
* ``text_file:PATH``: any UTF-8 text file, e.g.
  ``--config.data.name=text_file:/data/my_novel.txt``.

Split conventions (``config.data.split_convention``), all contiguous ranges
of characters, with n the number of characters:

* ``"tfds"`` (default): TFDS ``tiny_shakespeare``'s 90/5/5. ``train`` is the
  first ``int(n * 0.9)``; of the remaining r characters, ``validation`` is the
  first ``int(r * 0.5)`` and ``test`` the rest. Tiny Shakespeare: 1,003,854 /
  55,770 / 55,770.
* ``"nanogpt"``: nanoGPT's (and char-rnn's) 90/10. ``train`` is the first
  ``int(n * 0.9)``, ``validation`` the last 10%; ``test`` is the same array as
  ``validation`` (there is no third split), so that code evaluating on
  ``test`` reports nanoGPT's validation loss. Tiny Shakespeare: 1,003,854 /
  111,540.

The two conventions share the training text; nanoGPT's validation text is
TFDS's validation followed by TFDS's test.

The vocabulary is built from the whole file, as nanoGPT's ``prepare.py`` does,
so that held-out text never holds a character the model cannot score; for Tiny
Shakespeare it equals the training split's own character set (65 characters),
so the ids are exactly nanoGPT's.

Every split is one int32 array ``[num_characters]`` under the field
``"tokens"``; the tokenizer travels with the dataset (``TextDataset``) and its
``to_dict()`` is small and JSON-able, to be saved with a checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Iterator

import numpy as np

from genjax.data.pipeline import process_rows, restored_step
from genjax.data.registry import Dataset, DatasetError, register_dataset

log = logging.getLogger(__name__)

SPLIT_CONVENTIONS = ("tfds", "nanogpt")
DEFAULT_SPLIT_CONVENTION = "tfds"
TRAIN_FRACTION = 0.9  # Both conventions: train = the first int(n * 0.9) characters.

TINY_SHAKESPEARE_FILE = "input.txt"
# The file TFDS's tiny_shakespeare builder downloads (its checksums.tsv).
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_CHARS = 1_115_394
_TINY_SHAKESPEARE_HINT = (
    f"pass --config.data.manual_dir=DIR with DIR holding char-rnn's tinyshakespeare "
    f"{TINY_SHAKESPEARE_FILE} (the file TFDS's tiny_shakespeare downloads), e.g. "
    f"../shared/data/tiny_shakespeare; genjax reads it offline, without TensorFlow"
)

TEXT_FILE_PREFIX = "text_file:"

# The default seed of random_eval_batches: fixed, so that every evaluation of
# every run scores the same windows and numbers are comparable across steps.
EVAL_SEED = 1_234

_STATE_VERSION = 1
_TOKENIZER_VERSION = 1


# --------------------------------------------------------------------------
# The tokenizer.


class CharTokenizer:
    """Characters <-> int32 ids: id ``i`` is the ``i``-th character of ``chars``.

    ``chars`` is the sorted set of characters of a text (code-point order, as
    Python's ``sorted(set(text))``), so the ids match nanoGPT's ``stoi``.

    Example::

        tok = CharTokenizer.from_text(text)
        ids = tok.encode("To be")          # int32 [5]
        tok.decode(ids) == "To be"
        tok2 = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    """

    def __init__(self, chars: str):
        """Args:
          chars: the vocabulary, a non-empty string of distinct characters in
            increasing code-point order.

        Raises:
          DatasetError: if ``chars`` is not such a string.
        """
        if not isinstance(chars, str) or not chars:
            raise DatasetError(
                f"CharTokenizer: chars={chars!r:.60}, expected a non-empty string"
            )
        codepoints = _codepoints(chars)
        if np.any(np.diff(codepoints.astype(np.int64)) <= 0):
            raise DatasetError(
                f"CharTokenizer: chars={chars!r:.60} is not sorted with every "
                f"character once; build it with CharTokenizer.from_text"
            )
        self._chars = chars
        self._codepoints = codepoints  # uint32 [V], increasing.
        # code point -> id, -1 where not in the vocabulary; built on first use.
        self._table: np.ndarray | None = None

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The tokenizer whose vocabulary is every character of ``text``.

        Raises:
          DatasetError: if ``text`` is empty.
        """
        if not isinstance(text, str) or not text:
            raise DatasetError("CharTokenizer.from_text: got no text to build a vocabulary from")
        # A histogram of code points (at most 0x110000 bins) finds the set in
        # 5 ms on 1 MB, against 30 ms for np.unique's sort.
        return cls(_from_codepoints(np.flatnonzero(np.bincount(_codepoints(text)))))

    @property
    def chars(self) -> str:
        """The vocabulary: id ``i`` is ``chars[i]``."""
        return self._chars

    @property
    def vocab_size(self) -> int:
        """The number of distinct tokens (65 for Tiny Shakespeare)."""
        return len(self._chars)

    def encode(self, text: str) -> np.ndarray:
        """Returns the ids of ``text``'s characters, int32 ``[len(text)]``.

        Raises:
          DatasetError: naming the first character (and its position) that is
            not in the vocabulary.
        """
        if not isinstance(text, str):
            raise DatasetError(f"CharTokenizer.encode: expected a str, got {type(text).__name__}")
        if self._table is None:
            table = np.full(int(self._codepoints[-1]) + 1, -1, np.int32)
            table[self._codepoints] = np.arange(self.vocab_size, dtype=np.int32)
            self._table = table
        codepoints = _codepoints(text)
        # One gather through the table (4 ms on 1 MB, against 25 ms for
        # searchsorted); code points past its end are unknown too.
        inside = codepoints < len(self._table)
        ids = self._table[np.where(inside, codepoints, 0)]
        unknown = np.flatnonzero(~inside | (ids < 0))
        if unknown.size:
            position = int(unknown[0])
            char = text[position]
            raise DatasetError(
                f"character {char!r} (U+{ord(char):04X}) at position {position} is "
                f"not in the vocabulary of {self.vocab_size} characters the model "
                f"was trained on; remove or replace it ({unknown.size} unknown in all)"
            )
        return ids

    def decode(self, ids) -> str:
        """Returns the text of ``ids`` (any 1-D integer array-like, e.g. a jax array).

        Raises:
          DatasetError: if ``ids`` is not 1-D integers in ``[0, vocab_size)``.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise DatasetError(
                f"CharTokenizer.decode: expected a 1-D integer array, got "
                f"{ids.dtype} of shape {ids.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids[(ids < 0) | (ids >= self.vocab_size)][0])
            raise DatasetError(
                f"CharTokenizer.decode: id {bad} is outside the vocabulary "
                f"[0, {self.vocab_size})"
            )
        return _from_codepoints(self._codepoints[ids.astype(np.int64)])

    def to_dict(self) -> dict:
        """A small JSON-serialisable description, restored by ``from_dict``."""
        return {"type": "char", "version": _TOKENIZER_VERSION, "chars": self._chars}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        """The tokenizer saved by ``to_dict``.

        Raises:
          DatasetError: if ``d`` is not a char tokenizer's dict.
        """
        expected = {"type": "char", "version": _TOKENIZER_VERSION}
        if (not isinstance(d, dict) or set(d) != {"type", "version", "chars"}
                or any(d[k] != v for k, v in expected.items())):
            raise DatasetError(
                f"CharTokenizer.from_dict: {d!r:.80} is not a saved char tokenizer; "
                f"expected {{'type': 'char', 'version': {_TOKENIZER_VERSION}, 'chars': ...}}"
            )
        return cls(d["chars"])

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and other._chars == self._chars

    def __hash__(self) -> int:
        return hash(self._chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, chars={self._chars!r:.40})"


def _codepoints(text: str) -> np.ndarray:
    """uint32 code points of ``text``, without a Python loop."""
    # surrogatepass: a lone surrogate (possible in a str, never in decoded
    # UTF-8) is one code point like any other instead of a codec error.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _from_codepoints(codepoints: np.ndarray) -> str:
    return np.ascontiguousarray(codepoints, dtype="<u4").tobytes().decode(
        "utf-32-le", "surrogatepass")


# --------------------------------------------------------------------------
# The dataset.


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset(Dataset):
    """A ``Dataset`` of kind ``"text"`` that carries its tokenizer.

    Every split is ``{"tokens": int32 [num_characters]}``, read-only;
    ``element_spec`` is ``{"tokens": ()}`` and ``num_classes`` the vocabulary
    size (the number of values a next-token target takes). Code written for
    ``Dataset`` ignores the two extra attributes.

    Attributes:
      tokenizer: the ``CharTokenizer`` that made the tokens.
      split_convention: ``"tfds"`` or ``"nanogpt"`` (see the module docstring);
        says which text ``"validation"`` and ``"test"`` hold.
    """

    tokenizer: CharTokenizer = dataclasses.field(repr=False)
    split_convention: str

    def __post_init__(self):
        super().__post_init__()
        where = f"dataset {self.name!r}"
        if self.kind != "text":
            raise DatasetError(f"{where}: a TextDataset has kind 'text', got {self.kind!r}")
        if self.num_classes != self.tokenizer.vocab_size:
            raise DatasetError(
                f"{where}: num_classes={self.num_classes}, but the tokenizer has "
                f"{self.tokenizer.vocab_size} characters"
            )
        for split, fields in self.splits.items():
            tokens = fields["tokens"]
            if tokens.min() < 0 or tokens.max() >= self.tokenizer.vocab_size:
                raise DatasetError(
                    f"{where}: split {split!r} has ids outside [0, "
                    f"{self.tokenizer.vocab_size})"
                )


def split_ranges(num_chars: int, convention: str) -> dict[str, tuple[int, int]]:
    """The ``[start, stop)`` character range of every split.

    Args:
      num_chars: the length n of the whole text, in characters.
      convention: ``"tfds"`` (TFDS ``tiny_shakespeare``'s 90/5/5: train
        ``[0, int(0.9 n))``, then the rest r halved as ``int(r * 0.5)``
        validation, the remainder test) or ``"nanogpt"`` (nanoGPT's 90/10:
        train ``[0, int(0.9 n))``, validation = test = the rest).

    Raises:
      DatasetError: for an unknown convention.
    """
    if convention not in SPLIT_CONVENTIONS:
        raise DatasetError(
            f"config.data.split_convention={convention!r} is not one of "
            f"{list(SPLIT_CONVENTIONS)} ('tfds': TFDS's 90/5/5 train/validation/"
            f"test, 'nanogpt': nanoGPT's 90/10 train/validation)"
        )
    # The same float expressions as both references, so the boundaries agree
    # to the character.
    train_end = int(num_chars * TRAIN_FRACTION)
    if convention == "nanogpt":
        held_out = (train_end, num_chars)
        return {"train": (0, train_end), "validation": held_out, "test": held_out}
    validation_end = train_end + int((num_chars - train_end) * 0.5)
    return {
        "train": (0, train_end),
        "validation": (train_end, validation_end),
        "test": (validation_end, num_chars),
    }


def read_text_file(path: str, fix: str) -> str:
    """Returns the text of UTF-8 file ``path``, unchanged (no newline translation).

    Args:
      path: the file.
      fix: what the user should do, ending every message.

    Raises:
      DatasetError: one line naming ``path`` if it is missing, a directory,
        unreadable, not UTF-8 or empty.
    """
    if not os.path.exists(path):
        raise DatasetError(f"text file {path} does not exist; {fix}")
    if os.path.isdir(path):
        raise DatasetError(f"text file {path} is a directory, expected a file; {fix}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read text file {path} ({e.strerror or e}); {fix}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"text file {path} is not UTF-8: byte 0x{data[e.start]:02x} at offset "
            f"{e.start} ({e.reason}); convert it, e.g. iconv -f latin1 -t utf-8 "
            f"{path} > converted.txt"
        ) from e
    if not text:
        raise DatasetError(f"text file {path} is empty; {fix}")
    return text


def text_dataset(
    name: str, text: str, *, split_convention: str, source: str,
    min_split_tokens: int = 2,
) -> TextDataset:
    """Tokenizes ``text`` and splits it into a ``TextDataset``.

    Args:
      name: the dataset's registered name.
      text: the whole text.
      split_convention: ``"tfds"`` or ``"nanogpt"``.
      source: what the text came from (a path), for messages.
      min_split_tokens: the fewest tokens any split may have.

    Raises:
      DatasetError: for an unknown convention or a split shorter than
        ``min_split_tokens``; names ``source`` and the split sizes.
    """
    ranges = split_ranges(len(text), split_convention)
    sizes = {split: stop - start for split, (start, stop) in ranges.items()}
    short = [split for split, size in sizes.items() if size < min_split_tokens]
    if short:
        listed = ", ".join(f"{s} {sizes[s]}" for s in ranges)
        raise DatasetError(
            f"text {source} is too short: its {len(text)} characters split "
            f"({split_convention!r}) into {listed}, and every split needs at least "
            f"{min_split_tokens} tokens; use a longer text"
        )
    tokenizer = CharTokenizer.from_text(text)
    tokens = tokenizer.encode(text)
    # Splits are read-only views: nanogpt's validation and test share memory.
    tokens.setflags(write=False)
    splits = {split: {"tokens": tokens[start:stop]} for split, (start, stop) in ranges.items()}
    description = (
        f"{source}: {len(text):,} characters, {tokenizer.vocab_size} distinct; "
        f"split {split_convention!r}: "
        + " / ".join(f"{s} {sizes[s]:,}" for s in ranges)
    )
    return TextDataset(
        name=name,
        kind="text",
        splits=splits,
        element_spec={"tokens": ()},
        num_classes=tokenizer.vocab_size,
        description=description,
        tokenizer=tokenizer,
        split_convention=split_convention,
    )


def _options(data_config) -> tuple[str, int]:
    """``(split_convention, min_split_tokens)`` from ``config.data``: every
    split must hold a token and its successor (the model's window length is
    the model's business, checked when batches are drawn)."""
    convention = data_config.get("split_convention") or DEFAULT_SPLIT_CONVENTION
    return convention, 2


@register_dataset(
    "tiny_shakespeare",
    "text",
    "Tiny Shakespeare (char-rnn), 1,115,394 characters, 65 distinct; "
    "config.data.manual_dir holds input.txt (TFDS name)",
)
def load_tiny_shakespeare(data_config) -> TextDataset:
    """Loads Tiny Shakespeare from ``config.data.manual_dir``, offline.

    Args:
      data_config: ``config.data`` with ``manual_dir`` (the directory holding
        ``input.txt``, or the file itself) and optionally ``split_convention``
        (``"tfds"``, default, or ``"nanogpt"``). ``data_dir`` is not
        used: nothing is prepared or cached, reading takes about 20 ms.

    Raises:
      DatasetError: if ``manual_dir`` is unset, or holds no readable
        ``input.txt``; the message says what to pass. A file that differs
        from the standard one is used with a warning (numbers are then not
        comparable with nanoGPT's or TFDS's).
    """
    convention, min_tokens = _options(data_config)
    manual_dir = data_config.get("manual_dir")
    if manual_dir is None:
        raise DatasetError(f"dataset 'tiny_shakespeare' needs its text file: {_TINY_SHAKESPEARE_HINT}")
    manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
    if os.path.isdir(manual_dir):
        path = os.path.join(manual_dir, TINY_SHAKESPEARE_FILE)
        if not os.path.isfile(path):
            raise DatasetError(
                f"config.data.manual_dir {manual_dir} has no {TINY_SHAKESPEARE_FILE}; "
                f"{_TINY_SHAKESPEARE_HINT}"
            )
    elif os.path.isfile(manual_dir):
        path = manual_dir
    else:
        raise DatasetError(
            f"config.data.manual_dir {manual_dir} does not exist; {_TINY_SHAKESPEARE_HINT}"
        )
    text = read_text_file(path, _TINY_SHAKESPEARE_HINT)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != TINY_SHAKESPEARE_SHA256:
        log.warning(
            "genjax: %s (%d characters, sha256 %s) is not the standard Tiny "
            "Shakespeare (%d characters, sha256 %s); results will not be "
            "comparable with nanoGPT's or TFDS's", path, len(text), digest,
            TINY_SHAKESPEARE_CHARS, TINY_SHAKESPEARE_SHA256)
    return text_dataset("tiny_shakespeare", text, split_convention=convention,
                        source=path, min_split_tokens=min_tokens)


@register_dataset(
    TEXT_FILE_PREFIX + "PATH",
    "text",
    "any UTF-8 text file, one token per character: --config.data.name=text_file:PATH",
)
def load_text_file(data_config) -> TextDataset:
    """Loads the UTF-8 text file named in ``config.data.name`` (``text_file:PATH``).

    ``PATH`` may be relative (to the working directory) and start with ``~``.

    Args:
      data_config: ``config.data`` with ``name`` and optionally
        ``split_convention`` (as for ``tiny_shakespeare``).

    Raises:
      DatasetError: naming the path if the file is missing, not UTF-8, empty
        or too short for every split to hold a window.
    """
    name = data_config.get("name")
    convention, min_tokens = _options(data_config)
    path = name[len(TEXT_FILE_PREFIX):]
    fix = f"pass --config.data.name={TEXT_FILE_PREFIX}PATH with PATH a UTF-8 text file"
    if not path:
        raise DatasetError(f"config.data.name={name!r} names no file; {fix}")
    path = os.path.abspath(os.path.expanduser(path))
    text = read_text_file(path, fix)
    return text_dataset(name, text, split_convention=convention, source=path,
                        min_split_tokens=min_tokens)


# --------------------------------------------------------------------------
# Windows: training batches and evaluation batches.


def _tokens_of(arrays, where: str) -> np.ndarray:
    """The 1-D integer ``"tokens"`` array of a split's field dict."""
    tokens = arrays.get("tokens") if isinstance(arrays, dict) else None
    if tokens is None:
        raise DatasetError(
            f"{where}: expected a text split's fields {{'tokens': int32 [N]}} "
            f"(dataset.arrays(split)), got {type(arrays).__name__}"
            + (f" with keys {sorted(arrays)}" if isinstance(arrays, dict) else "")
        )
    if not isinstance(tokens, np.ndarray) or tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise DatasetError(f"{where}: 'tokens' must be a 1-D integer numpy array")
    return tokens


def _check_positive(where: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise DatasetError(f"{where}: {key}={value!r}, expected a positive int")
    return int(value)


def _check_block_size(where: str, num_tokens: int, block_size: int) -> None:
    if num_tokens < block_size + 1:
        raise DatasetError(
            f"{where}: the split has {num_tokens} tokens, fewer than block_size + 1 "
            f"= {block_size + 1}; lower the block size or use a longer text"
        )


def _windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> dict[str, np.ndarray]:
    """``{"inputs", "targets"}``, int32 ``[len(starts), block_size]`` each:
    ``tokens[s : s + block_size]`` and ``tokens[s + 1 : s + block_size + 1]``."""
    index = starts[:, None] + np.arange(block_size + 1)  # [B, T + 1]
    # Two gathers instead of slicing one [B, T+1] window: both results are
    # contiguous, so they go to the device without another copy.
    return {
        "inputs": tokens[index[:, :-1]].astype(np.int32, copy=False),
        "targets": tokens[index[:, 1:]].astype(np.int32, copy=False),
    }


@dataclasses.dataclass(frozen=True)
class SavedVocabulary:
    """What a language model needs of its text dataset, without the text.

    Built from a checkpoint's saved tokenizer (``tokenizer_from_state``) so
    that sampling reads no data: it has a ``TextDataset``'s ``name``,
    ``kind``, ``num_classes``, ``element_spec`` and ``tokenizer``, and no
    splits.
    """

    name: str
    tokenizer: CharTokenizer
    kind: str = "text"
    element_spec: dict = dataclasses.field(default_factory=lambda: {"tokens": ()})

    @property
    def num_classes(self) -> int:
        return self.tokenizer.vocab_size

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        raise DatasetError(
            f"dataset {self.name!r} was not loaded (only its vocabulary was "
            f"read from the checkpoint), so split {split!r} is unavailable")


def example_batch(block_size: int, batch_size: int = 1) -> dict[str, np.ndarray]:
    """Zeros shaped like a window batch, for initialising a model's parameters."""
    zeros = np.zeros((batch_size, block_size), np.int32)
    return {"inputs": zeros, "targets": zeros.copy()}


class TextTrainIterator:
    """Endless, deterministic batches of random windows, with a small JSON-able state.

    Step ``k``'s global batch is ``global_batch_size`` windows whose starts
    are drawn uniformly from ``[0, N - block_size)`` (every start whose window
    of ``block_size + 1`` tokens fits, as nanoGPT's ``get_batch``) by
    ``np.random.default_rng([seed, k])``: a pure function of ``(seed, k)``,
    so the iterator's whole state is the step counter, and a resumed run sees
    exactly the batches an uninterrupted one would. Windows are drawn with
    replacement; there are no epochs.

    ``next()`` returns this process's rows of the global batch (process ``p``
    gets rows ``[p*b, (p+1)*b)``, ``b = global_batch_size // process_count``)::

        {"inputs": int32 [b, block_size], "targets": int32 [b, block_size]}

    with ``targets[:, t] == inputs[:, t + 1]``, the next token. Host cost is
    one small RNG and two numpy gathers (tens of microseconds).

    Example::

        it = TextTrainIterator(dataset.arrays("train"), 64, seed=seed, block_size=256)
        batch = next(it)
        state = it.get_state()   # store with the checkpoint
        it.set_state(state)      # on restore: continues with the same batches

    The constructor mirrors ``pipeline.TrainIterator`` plus ``block_size``;
    ``tokenizer``, when given, is saved in the state (so a checkpoint's data
    state alone can decode samples, see ``tokenizer_from_state``) and checked
    on ``set_state``.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        *,
        block_size: int,
        tokenizer: CharTokenizer | None = None,
    ):
        """Builds the iterator at step 0.

        Args:
          arrays: a text split's fields, ``{"tokens": int [N]}``
            (``dataset.arrays("train")``).
          global_batch_size: windows per step over all processes; divisible
            by ``process_count``.
          seed: non-negative int; the windows depend only on it and the step.
          process_index: this process, in ``[0, process_count)``.
          process_count: the number of processes sharing each global batch.
          block_size: tokens of context per window (the model's sequence
            length); ``N`` must be at least ``block_size + 1``.
          tokenizer: optional; stored in ``get_state()``.

        Raises:
          DatasetError: for any invalid argument, naming the value.
        """
        where = "TextTrainIterator"
        tokens = _tokens_of(arrays, where)
        self._rows = process_rows(where, global_batch_size, seed,
                                  process_index, process_count)
        self._global_batch_size = int(global_batch_size)
        self._block_size = _check_positive(where, "block_size", block_size)
        _check_block_size(where, len(tokens), self._block_size)
        if tokenizer is not None and not isinstance(tokenizer, CharTokenizer):
            raise DatasetError(f"{where}: tokenizer must be a CharTokenizer or None")
        self._tokens = tokens
        self._seed = int(seed)
        self._tokenizer = tokenizer
        self._step = 0

    def window_starts(self, step: int) -> np.ndarray:
        """The start offsets (int64 ``[global_batch_size]``, tokens into the
        split) of step ``step``'s global batch; window ``i`` is
        ``tokens[starts[i] : starts[i] + block_size + 1]``."""
        rng = np.random.default_rng([self._seed, int(step)])
        return rng.integers(0, len(self._tokens) - self._block_size,
                            size=self._global_batch_size)

    def __iter__(self) -> "TextTrainIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.next()

    def next(self) -> dict[str, np.ndarray]:
        """Returns this process's rows of the next global batch."""
        starts = self.window_starts(self._step)[self._rows]
        self._step += 1
        return _windows(self._tokens, starts, self._block_size)

    @property
    def step(self) -> int:
        """The number of batches returned so far (or restored with ``set_state``)."""
        return self._step

    def get_state(self) -> dict:
        """Returns the position as a small JSON-serialisable dict.

        It describes the global stream, so it can be restored with another
        ``process_count`` (same seed, global batch size, block size, data).
        """
        state = {
            "version": _STATE_VERSION,
            "kind": "text_windows",
            "step": self._step,
            "seed": self._seed,
            "global_batch_size": self._global_batch_size,
            "block_size": self._block_size,
            "num_tokens": len(self._tokens),
        }
        if self._tokenizer is not None:
            state["tokenizer"] = self._tokenizer.to_dict()
        return state

    def set_state(self, state: dict) -> None:
        """Continues from ``state`` (from ``get_state``): the following batches
        are exactly those an uninterrupted iterator would have returned.

        Raises:
          DatasetError: if ``state`` is malformed or was saved by an iterator
            with another seed, batch size, block size, data or vocabulary
            (resuming would silently change the data).
        """
        self._step = restored_step(
            "TextTrainIterator", state, self.get_state(),
            "resume with the same seed, batch size, block size and text")


def tokenizer_from_state(data_state: dict) -> CharTokenizer:
    """The tokenizer saved in a ``TextTrainIterator`` state (a checkpoint's data state).

    Raises:
      DatasetError: if the state holds no tokenizer.
    """
    if not isinstance(data_state, dict) or "tokenizer" not in data_state:
        raise DatasetError(
            "the checkpoint's data state holds no tokenizer; it was not saved by "
            "a TextTrainIterator built with tokenizer="
        )
    return CharTokenizer.from_dict(data_state["tokenizer"])


def contiguous_eval_batches(
    arrays: dict[str, np.ndarray], batch_size: int, *, block_size: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Scores a whole split once: non-overlapping windows, in order.

    Window ``k`` is ``tokens[k*T : k*T + T + 1]`` (``T = block_size``), for
    ``k < (N - 1) // T``, so every target token is scored exactly once except
    the last ``(N - 1) % T`` (fewer than ``T``), which are dropped. Yields
    ``(batch, mask)`` exactly like ``pipeline.eval_batches``: ``batch`` has
    ``inputs`` and ``targets``, int32 ``[batch_size, T]``; the last batch is
    padded with copies of window 0 and the float32 mask ``[batch_size]`` is 0
    on padding. Every real window has ``T`` targets, so the mask-weighted mean
    of per-window mean losses is the mean loss per token.

    Raises:
      DatasetError: for bad arguments or a split shorter than ``T + 1``.
    """
    tokens, batch_size, block_size = _eval_arguments(
        "contiguous_eval_batches", arrays, batch_size, block_size)
    starts = np.arange((len(tokens) - 1) // block_size, dtype=np.int64) * block_size
    return _masked_batches(tokens, starts, batch_size, block_size)


def random_eval_batches(
    arrays: dict[str, np.ndarray], batch_size: int, *, block_size: int,
    num_batches: int, seed: int = EVAL_SEED,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """nanoGPT-style evaluation (its ``estimate_loss``): ``num_batches``
    batches of random windows, but from a fixed seed, so that every call
    scores the same windows and numbers compare across steps and runs.

    Starts are drawn as in ``TextTrainIterator`` (uniform over
    ``[0, N - T)``), all at once from ``np.random.default_rng(seed)``.
    Yields ``(batch, mask)`` like ``contiguous_eval_batches``, the mask all
    ones.

    Raises:
      DatasetError: for bad arguments or a split shorter than ``T + 1``.
    """
    where = "random_eval_batches"
    num_batches = _check_positive(where, "num_batches", num_batches)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"{where}: seed={seed!r}, expected a non-negative int")
    tokens, batch_size, block_size = _eval_arguments(
        where, arrays, batch_size, block_size)
    starts = np.random.default_rng(int(seed)).integers(
        0, len(tokens) - block_size, size=num_batches * batch_size)
    return _masked_batches(tokens, starts, batch_size, block_size)


def _eval_arguments(where: str, arrays, batch_size, block_size):
    """``(tokens, batch_size, block_size)`` checked for an eval iterator."""
    tokens = _tokens_of(arrays, where)
    batch_size = _check_positive(where, "batch_size", batch_size)
    block_size = _check_positive(where, "block_size", block_size)
    _check_block_size(where, len(tokens), block_size)
    return tokens, batch_size, block_size


def _masked_batches(tokens, starts, batch_size: int, block_size: int):
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        num_real = len(chunk)
        if num_real < batch_size:
            chunk = np.concatenate([chunk, np.full(batch_size - num_real, starts[0])])
        mask = np.zeros(batch_size, np.float32)
        mask[:num_real] = 1.0
        yield _windows(tokens, chunk, block_size), mask
