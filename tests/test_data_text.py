"""Tests of genjax.data.text: the char tokenizer, the text datasets, the windows.

Offline and fast (a few seconds): the real Tiny Shakespeare (1.1 MB) is read
from ``../shared/data/tiny_shakespeare`` beside the project root and loaded
once per split convention; error cases use small files in ``tmp_path``.
Expected sizes are computed here from the two references' own formulas
(nanoGPT's ``data/shakespeare_char/prepare.py``, TFDS's tiny_shakespeare
builder) and checked against the numbers those projects print.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest
from conftest import data_config, needs_data

import genjax.data as gd
from genjax.data import registry as registry_lib
from genjax.data import text

SHAKESPEARE_DIR = (pathlib.Path(__file__).resolve().parents[1].parent
                   / "shared" / "data" / "tiny_shakespeare")
SHAKESPEARE_FILE = SHAKESPEARE_DIR / "input.txt"
# nanoGPT's prepare.py prints these characters (after "\n") for the file.
NANOGPT_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

needs_shakespeare = needs_data(
    SHAKESPEARE_FILE.is_file(),
    f"Tiny Shakespeare's input.txt is not in {SHAKESPEARE_DIR}",
)


def assert_one_line(error: Exception, *must_contain: str) -> str:
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    for part in must_contain:
        assert part in message, f"{part!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def shakespeare_text() -> str:
    if not SHAKESPEARE_FILE.is_file():
        pytest.skip(f"Tiny Shakespeare's input.txt is not in {SHAKESPEARE_DIR}")
    return SHAKESPEARE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def shakespeare(shakespeare_text):
    """``{convention: TextDataset}`` loaded through the registry."""
    return {
        convention: gd.load_dataset(data_config(
            "tiny_shakespeare", manual_dir=str(SHAKESPEARE_DIR),
            split_convention=convention))
        for convention in text.SPLIT_CONVENTIONS
    }


def write(path: pathlib.Path, content) -> pathlib.Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


# --------------------------------------------------------------------------
# The tokenizer.


@needs_shakespeare
def test_tokenizer_vocabulary_and_round_trip(shakespeare_text):
    tok = text.CharTokenizer.from_text(shakespeare_text)
    assert tok.vocab_size == 65
    assert tok.chars == NANOGPT_CHARS == "".join(sorted(set(shakespeare_text)))
    ids = tok.encode(shakespeare_text)
    assert ids.dtype == np.int32 and ids.shape == (1_115_394,)
    # The ids are nanoGPT's stoi, computed independently.
    stoi = {c: i for i, c in enumerate(sorted(set(shakespeare_text)))}
    head = shakespeare_text[:2000]
    np.testing.assert_array_equal(ids[:2000], [stoi[c] for c in head])
    assert tok.decode(ids) == shakespeare_text
    assert tok.decode([]) == ""


def test_tokenizer_unicode_round_trip_and_serialisation():
    sample = "Ünïcødé: 日本語 and emoji 😀\r\n\ttabs"
    tok = text.CharTokenizer.from_text(sample)
    assert tok.chars == "".join(sorted(set(sample)))
    assert tok.decode(tok.encode(sample)) == sample
    # A jax-like array of ids is accepted too.
    assert tok.decode(np.asarray(tok.encode("日本"), np.int64)) == "日本"
    saved = json.loads(json.dumps(tok.to_dict()))
    restored = text.CharTokenizer.from_dict(saved)
    assert restored == tok and restored.chars == tok.chars
    np.testing.assert_array_equal(restored.encode(sample), tok.encode(sample))


def test_tokenizer_unknown_character_is_one_line_error():
    tok = text.CharTokenizer.from_text("abc\n")
    with pytest.raises(gd.DatasetError) as info:
        tok.encode("ab\nZc")
    assert_one_line(info.value, "'Z'", "U+005A", "position 3", "4 characters")
    with pytest.raises(gd.DatasetError) as info:
        tok.encode("a😀")  # Past the end of the lookup table.
    assert_one_line(info.value, "U+1F600", "position 1")
    with pytest.raises(gd.DatasetError) as info:
        tok.decode([0, 4])
    assert_one_line(info.value, "id 4", "[0, 4)")


@pytest.mark.parametrize("bad", [
    {"type": "char", "version": 1, "chars": "ba"},   # not sorted
    {"type": "char", "version": 1, "chars": "aab"},  # repeated
    {"type": "char", "version": 1, "chars": ""},
    {"type": "bpe", "version": 1, "chars": "ab"},
    {"chars": "ab"},
])
def test_tokenizer_from_dict_rejects_malformed(bad):
    with pytest.raises(gd.DatasetError) as info:
        text.CharTokenizer.from_dict(bad)
    assert_one_line(info.value)


# --------------------------------------------------------------------------
# Tiny Shakespeare and the split conventions.


def test_registry_lists_the_text_datasets():
    rows = {name: kind for name, kind, _ in gd.list_datasets()}
    assert rows["tiny_shakespeare"] == "text"
    assert rows["text_file:PATH"] == "text"


@needs_shakespeare
def test_nanogpt_split(shakespeare, shakespeare_text):
    ds = shakespeare["nanogpt"]
    n = len(shakespeare_text)
    assert n == 1_115_394
    n_train = int(n * 0.9)  # prepare.py: train_data = data[:int(n*0.9)]
    assert (n_train, n - n_train) == (1_003_854, 111_540)  # what prepare.py prints
    assert isinstance(ds, text.TextDataset)
    assert ds.kind == "text" and ds.num_classes == 65 and ds.tokenizer.vocab_size == 65
    assert ds.element_spec == {"tokens": ()} and ds.split_convention == "nanogpt"
    train, val, test = (ds.arrays(s)["tokens"] for s in ("train", "validation", "test"))
    assert (len(train), len(val)) == (n_train, n - n_train)
    # test is the validation text: eval code on "test" reports nanoGPT's val.
    np.testing.assert_array_equal(test, val)
    for tokens in (train, val, test):
        assert tokens.dtype == np.int32 and tokens.ndim == 1 and not tokens.flags.writeable
    assert ds.tokenizer.decode(train) == shakespeare_text[:n_train]
    assert ds.tokenizer.decode(val) == shakespeare_text[n_train:]


@needs_shakespeare
def test_tfds_split(shakespeare, shakespeare_text):
    ds = shakespeare["tfds"]
    # The builder's rule: i = int(len * 0.9); then i = int(len(rest) * 0.5).
    n = len(shakespeare_text)
    i = int(n * 0.9)
    rest = shakespeare_text[i:]
    j = int(len(rest) * 0.5)
    expected = {"train": shakespeare_text[:i], "validation": rest[:j], "test": rest[j:]}
    assert {s: len(t) for s, t in expected.items()} == {
        "train": 1_003_854, "validation": 55_770, "test": 55_770}
    assert sorted(ds.splits) == ["test", "train", "validation"]
    for split, split_text in expected.items():
        tokens = ds.arrays(split)["tokens"]
        assert tokens.dtype == np.int32 and len(tokens) == len(split_text)
        assert ds.tokenizer.decode(tokens) == split_text
    # The conventions share the training text, and nanoGPT's validation is
    # TFDS's validation followed by its test.
    nano = shakespeare["nanogpt"]
    np.testing.assert_array_equal(ds.arrays("train")["tokens"], nano.arrays("train")["tokens"])
    np.testing.assert_array_equal(
        np.concatenate([ds.arrays("validation")["tokens"], ds.arrays("test")["tokens"]]),
        nano.arrays("validation")["tokens"])
    # The whole-file vocabulary is the training text's own (TFDS's note:
    # "train split includes vocabulary for other splits").
    assert text.CharTokenizer.from_text(expected["train"]) == ds.tokenizer
    assert ds.split_convention == "tfds"


@needs_shakespeare
def test_tfds_is_the_default_convention_and_manual_dir_may_be_the_file(shakespeare):
    ds = gd.load_dataset(data_config("tiny_shakespeare", manual_dir=str(SHAKESPEARE_FILE)))
    assert ds.split_convention == "tfds"
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(ds.arrays(split)["tokens"],
                                      shakespeare["tfds"].arrays(split)["tokens"])


def test_split_ranges_small_numbers():
    assert text.split_ranges(100, "tfds") == {
        "train": (0, 90), "validation": (90, 95), "test": (95, 100)}
    assert text.split_ranges(101, "tfds") == {  # int(90.9) = 90; rest 11 -> 5 + 6
        "train": (0, 90), "validation": (90, 95), "test": (95, 101)}
    assert text.split_ranges(101, "nanogpt") == {
        "train": (0, 90), "validation": (90, 101), "test": (90, 101)}
    with pytest.raises(gd.DatasetError) as info:
        text.split_ranges(100, "90/10")
    assert_one_line(info.value, "'90/10'", "'tfds'", "'nanogpt'")


def test_tiny_shakespeare_without_manual_dir_says_what_to_pass():
    with pytest.raises(gd.DatasetError) as info:
        gd.load_dataset(data_config("tiny_shakespeare"))
    assert_one_line(info.value, "--config.data.manual_dir=DIR", "input.txt",
                    "../shared/data/tiny_shakespeare")


def test_tiny_shakespeare_manual_dir_problems(tmp_path):
    with pytest.raises(gd.DatasetError) as info:
        gd.load_dataset(data_config("tiny_shakespeare", manual_dir=str(tmp_path)))
    assert_one_line(info.value, str(tmp_path), "has no input.txt", "--config.data.manual_dir")
    missing = tmp_path / "nowhere"
    with pytest.raises(gd.DatasetError) as info:
        gd.load_dataset(data_config("tiny_shakespeare", manual_dir=str(missing)))
    assert_one_line(info.value, str(missing), "does not exist")


def test_tiny_shakespeare_other_text_loads_with_a_warning(tmp_path, caplog):
    write(tmp_path / "input.txt", "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3)
    with caplog.at_level(logging.WARNING):
        ds = gd.load_dataset(data_config("tiny_shakespeare", manual_dir=str(tmp_path),
                                         split_convention="nanogpt"))
    assert "not the standard Tiny Shakespeare" in caplog.text
    assert ds.name == "tiny_shakespeare" and ds.num_classes == len(set(
        (tmp_path / "input.txt").read_text()))


# --------------------------------------------------------------------------
# text_file:PATH.


def test_text_file_loads_any_utf8_text(tmp_path):
    content = "".join(f"line {i}: ça va? ✓\n" for i in range(40))
    path = write(tmp_path / "mine.txt", content)
    name = f"text_file:{path}"
    ds = gd.load_dataset(data_config(name, split_convention="nanogpt"))
    assert ds.name == name and ds.kind == "text"
    assert ds.tokenizer.chars == "".join(sorted(set(content)))
    n_train = int(len(content) * 0.9)
    assert ds.tokenizer.decode(ds.arrays("train")["tokens"]) == content[:n_train]
    assert ds.tokenizer.decode(ds.arrays("test")["tokens"]) == content[n_train:]
    tfds_style = gd.load_dataset(data_config(name))
    assert tfds_style.split_convention == "tfds"
    assert sum(len(v["tokens"]) for v in tfds_style.splits.values()) == len(content)


def test_text_file_relative_path(tmp_path, monkeypatch):
    write(tmp_path / "rel.txt", "abcdefghij" * 10)
    monkeypatch.chdir(tmp_path)
    ds = gd.load_dataset(data_config("text_file:rel.txt"))
    assert ds.num_examples("train") == 90


def test_text_file_errors_are_one_line(tmp_path):
    missing = tmp_path / "missing.txt"
    cases = {
        "missing": (missing, "does not exist"),
        "latin1": (write(tmp_path / "latin1.txt", "caf\xe9 au lait".encode("latin-1")),
                   "is not UTF-8: byte 0xe9 at offset 3"),
        "empty": (write(tmp_path / "empty.txt", ""), "is empty"),
        "short": (write(tmp_path / "short.txt", "To be or"), "too short"),
        "directory": (tmp_path, "is a directory"),
    }
    for what, (path, problem) in cases.items():
        with pytest.raises(gd.DatasetError) as info:
            gd.load_dataset(data_config(f"text_file:{path}"))
        message = assert_one_line(info.value, str(path), problem)
        # Each message ends with what to do.
        assert any(fix in message for fix in ("pass --config.data.name=text_file:PATH",
                                              "iconv", "use a longer text")), (what, message)
    with pytest.raises(gd.DatasetError) as info:
        gd.load_dataset(data_config("text_file:"))
    assert_one_line(info.value, "names no file")


def test_registry_rejects_text_dataset_without_int32_tokens():
    with pytest.raises(gd.DatasetError) as info:
        registry_lib.Dataset(name="t", kind="text",
                             splits={s: {"tokens": np.zeros(4, np.float32)}
                                     for s in ("train", "test")},
                             element_spec={"tokens": ()}, num_classes=3, description="")
    assert_one_line(info.value, "'tokens'", "int32")


# --------------------------------------------------------------------------
# Training windows.


def small_tokens(n=500, vocab=7, seed=0):
    return {"tokens": np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)}


@needs_shakespeare
def test_windows_are_the_text_at_their_offsets(shakespeare, shakespeare_text):
    ds = shakespeare["nanogpt"]
    block = 64
    it = text.TextTrainIterator(ds.arrays("train"), 12, seed=5, block_size=block)
    tokens = ds.arrays("train")["tokens"]
    for step in range(3):
        starts = it.window_starts(step)
        batch = next(it)
        assert set(batch) == {"inputs", "targets"}
        for key in batch:
            assert batch[key].dtype == np.int32 and batch[key].shape == (12, block)
            assert batch[key].flags.c_contiguous
        np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
        for row, start in enumerate(starts):
            assert 0 <= start < len(tokens) - block
            np.testing.assert_array_equal(batch["inputs"][row], tokens[start:start + block])
            assert ds.tokenizer.decode(batch["inputs"][row]) == shakespeare_text[start:start + block]
            assert (ds.tokenizer.decode(batch["targets"][row])
                    == shakespeare_text[start + 1:start + block + 1])


def test_window_starts_cover_exactly_the_valid_range():
    n, block = 12, 8  # valid starts: 0..3 (a window needs 9 tokens)
    it = text.TextTrainIterator(small_tokens(n), 16, seed=0, block_size=block)
    seen = np.concatenate([it.window_starts(step) for step in range(50)])
    assert sorted(set(seen.tolist())) == [0, 1, 2, 3]
    # A split of exactly block_size + 1 tokens has one window.
    one = text.TextTrainIterator(small_tokens(block + 1), 4, seed=0, block_size=block)
    batch = next(one)
    np.testing.assert_array_equal(batch["inputs"], np.tile(small_tokens(block + 1)["tokens"][:-1], (4, 1)))


def test_windows_are_deterministic_from_seed_and_step():
    arrays = small_tokens(5_000)
    a = text.TextTrainIterator(arrays, 8, seed=3, block_size=16)
    b = text.TextTrainIterator(arrays, 8, seed=3, block_size=16)
    c = text.TextTrainIterator(arrays, 8, seed=4, block_size=16)
    batches_a = [next(a) for _ in range(4)]
    batches_b = [next(b) for _ in range(4)]
    batch_c = next(c)
    for x, y in zip(batches_a, batches_b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(batches_a[0]["inputs"], batches_a[1]["inputs"])
    assert not np.array_equal(batches_a[0]["inputs"], batch_c["inputs"])
    assert a.step == 4


def test_resume_gives_the_same_batches():
    arrays = small_tokens(5_000)
    tok = text.CharTokenizer("abcdefg")
    straight = text.TextTrainIterator(arrays, 8, seed=1, block_size=16, tokenizer=tok)
    expected = [next(straight) for _ in range(7)]
    first = text.TextTrainIterator(arrays, 8, seed=1, block_size=16, tokenizer=tok)
    for _ in range(4):
        next(first)
    state = json.loads(json.dumps(first.get_state()))  # as the checkpoint stores it
    assert state["step"] == 4
    assert text.tokenizer_from_state(state) == tok
    resumed = text.TextTrainIterator(arrays, 8, seed=1, block_size=16, tokenizer=tok)
    resumed.set_state(state)
    for want in expected[4:]:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("change, key", [
    ({"seed": 2}, "seed"),
    ({"global_batch_size": 4}, "global_batch_size"),
    ({"block_size": 8}, "block_size"),
    ({"tokenizer": text.CharTokenizer("abcdefgh")}, "tokenizer"),
])
def test_set_state_refuses_another_stream(change, key):
    arrays = small_tokens(5_000)
    kwargs = dict(seed=1, block_size=16, tokenizer=text.CharTokenizer("abcdefg"))
    state = text.TextTrainIterator(arrays, 8, **kwargs).get_state()
    kwargs.update(change)
    other = text.TextTrainIterator(arrays, kwargs.pop("global_batch_size", 8), **kwargs)
    with pytest.raises(gd.DatasetError) as info:
        other.set_state(state)
    assert_one_line(info.value, f"{key}=")


def test_set_state_refuses_malformed_states():
    it = text.TextTrainIterator(small_tokens(), 4, seed=0, block_size=8)
    for bad in (None, {"step": 3}, dict(it.get_state(), step=-1)):
        with pytest.raises(gd.DatasetError) as info:
            it.set_state(bad)
        assert_one_line(info.value)
    # An image TrainIterator's state is not a text state.
    with pytest.raises(gd.DatasetError):
        it.set_state({"version": 1, "step": 0, "seed": 0, "global_batch_size": 4,
                      "num_examples": 500})


def test_processes_get_their_rows_of_the_global_batch():
    arrays = small_tokens(5_000)
    whole = next(text.TextTrainIterator(arrays, 8, seed=9, block_size=16))
    for p in range(2):
        part = next(text.TextTrainIterator(arrays, 8, seed=9, block_size=16,
                                           process_index=p, process_count=2))
        for key in whole:
            np.testing.assert_array_equal(part[key], whole[key][4 * p:4 * (p + 1)])


def test_iterator_argument_errors():
    arrays = small_tokens(20)
    cases = [
        (dict(arrays=arrays, global_batch_size=4, seed=0, block_size=20), "fewer than block_size + 1 = 21"),
        (dict(arrays=arrays, global_batch_size=0, seed=0, block_size=4), "global_batch_size=0"),
        (dict(arrays=arrays, global_batch_size=4, seed=-1, block_size=4), "seed=-1"),
        (dict(arrays=arrays, global_batch_size=4, seed=0, block_size=0), "block_size=0"),
        (dict(arrays=arrays, global_batch_size=5, seed=0, block_size=4, process_count=2), "not divisible"),
        (dict(arrays={"image": arrays["tokens"]}, global_batch_size=4, seed=0, block_size=4), "'tokens'"),
    ]
    for kwargs, part in cases:
        with pytest.raises(gd.DatasetError) as info:
            text.TextTrainIterator(**kwargs)
        assert_one_line(info.value, part)


# --------------------------------------------------------------------------
# Evaluation batches.


def test_contiguous_eval_scores_each_target_once():
    n, block, batch_size = 103, 10, 4  # (103 - 1) // 10 = 10 windows, 2 targets dropped
    arrays = {"tokens": np.arange(n, dtype=np.int32)}
    batches = list(text.contiguous_eval_batches(arrays, batch_size, block_size=block))
    assert len(batches) == 3
    masks = np.concatenate([mask for _, mask in batches])
    np.testing.assert_array_equal(masks, [1] * 10 + [0] * 2)
    for batch, mask in batches:
        assert mask.dtype == np.float32 and mask.shape == (batch_size,)
        for key in ("inputs", "targets"):
            assert batch[key].shape == (batch_size, block) and batch[key].dtype == np.int32
    real = lambda key: np.concatenate([b[key][m > 0] for b, m in batches])  # noqa: E731
    np.testing.assert_array_equal(real("inputs").ravel(), np.arange(100))
    np.testing.assert_array_equal(real("targets").ravel(), np.arange(1, 101))
    # Padding rows repeat window 0.
    np.testing.assert_array_equal(batches[-1][0]["inputs"][2], np.arange(block))


@needs_shakespeare
def test_contiguous_eval_on_nanogpt_validation(shakespeare):
    val = shakespeare["nanogpt"].arrays("test")
    batches = list(text.contiguous_eval_batches(val, 64, block_size=256))
    num_windows = (111_540 - 1) // 256
    assert sum(int(m.sum()) for _, m in batches) == num_windows == 435
    assert len(batches) == -(-num_windows // 64)


def test_random_eval_batches_are_fixed():
    arrays = small_tokens(5_000)
    run = lambda **kw: list(text.random_eval_batches(  # noqa: E731
        arrays, 6, block_size=16, num_batches=3, **kw))
    first, second, other = run(), run(), run(seed=7)
    assert len(first) == 3
    for (a, ma), (b, mb) in zip(first, second):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(ma, np.ones(6, np.float32))
        np.testing.assert_array_equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    assert not np.array_equal(first[0][0]["inputs"], other[0][0]["inputs"])
    assert not np.array_equal(first[0][0]["inputs"], first[1][0]["inputs"])
    with pytest.raises(gd.DatasetError) as info:
        text.random_eval_batches(arrays, 6, block_size=16, num_batches=0)
    assert_one_line(info.value, "num_batches=0")


def test_example_batch_shapes():
    example = text.example_batch(32, batch_size=2)
    assert {k: (v.shape, v.dtype) for k, v in example.items()} == {
        "inputs": ((2, 32), np.int32), "targets": ((2, 32), np.int32)}
