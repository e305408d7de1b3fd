"""Measured results live once, in the registry; README.md and docs/ show them.

The results blocks of README.md and docs/<family>.md must be exactly what
``python -m genjax.registry --readme`` generates from the registrations, so a
number edited in one place only fails here.
"""

import dataclasses
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from genjax import registry

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiments():
    return registry.load_all()


def block(text: str) -> str:
    """The generated part of a page: between the results markers."""
    start = text.index(registry.BEGIN_MARKER) + len(registry.BEGIN_MARKER)
    return text[start:text.index(registry.END_MARKER)].strip("\n")


def test_readme_block_is_what_the_registry_generates(experiments):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert block(readme) == (registry.readme_results(list(experiments.values()))
                             + registry.study_results()), (
        f"README.md's results table is stale; run `{registry.GENERATE_COMMAND}`")


def test_docs_blocks_are_what_the_registry_generates(experiments):
    for family in sorted({e.family for e in experiments.values()}):
        page = REPO / registry.docs_page(family)
        assert page.is_file(), f"family {family} has no {registry.docs_page(family)}"
        assert block(page.read_text(encoding="utf-8")) == registry.family_results(
            list(experiments.values()), family), (
            f"{page.name}'s results are stale; run `{registry.GENERATE_COMMAND}`")


def test_every_registered_experiment_appears(experiments):
    readme_rows = block((REPO / "README.md").read_text(encoding="utf-8"))
    named = set(re.findall(r"^\| `(\w+)` \|", readme_rows, flags=re.M))
    assert named == set(experiments)
    for exp in experiments.values():
        page = (REPO / registry.docs_page(exp.family)).read_text(encoding="utf-8")
        assert f"### `{exp.name}`" in block(page)
        assert f"]({registry.docs_page(exp.family)})" in readme_rows


def test_every_number_of_a_record_is_in_the_readme_table(experiments):
    rows = block((REPO / "README.md").read_text(encoding="utf-8"))
    for exp in experiments.values():
        for result in exp.results:
            for key, value in result.metrics.items():
                assert f"`{key}` {registry.format_value(value)}" in rows, (exp.name, key)
            assert result.command in rows


def test_each_record_names_one_of_the_experiments_presets(experiments):
    for exp in experiments.values():
        for result in exp.results:
            assert result.preset in exp.presets, (exp.name, result.preset)


def test_each_record_has_the_command_that_runs_its_experiment_and_preset(experiments):
    for exp in experiments.values():
        for result in exp.results:
            prefix = f"python -m experiments.{exp.name}"
            assert result.command == prefix or result.command.startswith(prefix + " "), (
                exp.name, result.command)
            # No --preset means the command line's default, cpu.
            presets = re.findall(r"--preset=(\w+)", result.command) or ["cpu"]
            assert presets == [result.preset], (exp.name, result.command)


def test_a_number_edited_in_one_place_only_is_caught(experiments):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    fresh = registry.readme_results(list(experiments.values())) + registry.study_results()
    vae = experiments["vae_digits"]
    (result,) = vae.results
    key, value = next(iter(result.metrics.items()))
    shown = f"`{key}` {registry.format_value(value)}"
    other = f"`{key}` {registry.format_value(round(value + 0.01, 6))}"
    # Edited in README only: regenerating changes the file back.
    edited = readme.replace(shown, other)
    assert edited != readme
    assert registry.replace_block(edited, fresh) == readme
    # Edited in the registry only: the generated block no longer matches.
    changed = dataclasses.replace(
        result, metrics={**result.metrics, key: round(value + 0.01, 6)})
    others = [e for e in experiments.values() if e.name != "vae_digits"]
    regenerated = registry.readme_results(
        [*others, dataclasses.replace(vae, results=(changed,))])
    assert regenerated != block(readme)
    assert other in regenerated


def test_a_stale_record_says_so_in_every_table(experiments):
    vae = experiments["vae_digits"]
    (result,) = vae.results
    stale = dataclasses.replace(result, stale="a new evaluation protocol")
    marked = dataclasses.replace(vae, results=(stale,))
    others = [e for e in experiments.values() if e.name != "vae_digits"]
    readme = registry.readme_results([*others, marked])
    row = next(line for line in readme.splitlines()
               if line.startswith("| `vae_digits`"))
    assert "stale, to re-measure" in row and "a new evaluation protocol" in row
    docs = registry.family_results([*others, marked], "vae")
    assert "Stale, to re-measure:** a new evaluation protocol" in docs


def copy_pages(tmp_path: pathlib.Path) -> pathlib.Path:
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    return tmp_path


def test_check_fails_on_a_stale_page_and_readme_mode_fixes_it(tmp_path, capsys):
    root = copy_pages(tmp_path)
    assert registry.main(["--check"], root) == 0
    gan = root / "docs" / "gan.md"
    result = registry.get("dcgan_mnist").results[0]
    shown = f"`eval/fd` {registry.format_value(result.metrics['eval/fd'])}"
    text = gan.read_text()
    assert shown in text
    gan.write_text(text.replace(shown, "`eval/fd` 99.5"))
    assert registry.main(["--check"], root) == 1
    assert "stale results in docs/gan.md" in capsys.readouterr().err
    assert registry.main(["--readme"], root) == 0
    assert "rewrote docs/gan.md" in capsys.readouterr().out
    assert gan.read_text() == (REPO / "docs" / "gan.md").read_text()
    assert registry.main(["--check"], root) == 0


def test_missing_markers_and_bad_flags_are_errors(tmp_path, capsys):
    root = copy_pages(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace(registry.END_MARKER, ""))
    assert registry.main(["--readme"], root) == 1
    assert registry.END_MARKER in capsys.readouterr().err
    assert registry.END_MARKER not in readme.read_text()  # nothing written
    assert registry.main(["--write"], root) == 2
    assert "--readme, --check" in capsys.readouterr().err


def test_result_records_are_checked():
    ok = dict(preset="cpu", metrics={"eval/loss": 1.0}, command="python -m experiments.x",
              date="2026-12-04", host="2-core CPU", wall_time="1 s")
    registry.Result(**ok)
    with pytest.raises(ValueError, match="eval/kid"):
        registry.Result(**{**ok, "units": {"eval/kid": "nats"}})
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        registry.Result(**{**ok, "date": "Dec 4"})
    with pytest.raises(ValueError, match="finite number"):
        registry.Result(**{**ok, "metrics": {"eval/loss": float("nan")}})
    with pytest.raises(ValueError, match="command"):
        registry.Result(**{**ok, "command": " "})
    exp = registry.get("vae_digits")
    with pytest.raises(ValueError, match="unknown preset 'fast'; valid: smoke, cpu, paper"):
        registry.register(dataclasses.replace(
            exp, name="not_registered", results=(registry.Result(**{**ok, "preset": "fast"}),)))
    assert "not_registered" not in registry.load_all()


def test_the_generator_runs_as_a_module():
    # As a script the module is __main__ and the experiments register with
    # genjax.registry: --check must still see them all.
    done = subprocess.run([sys.executable, "-m", "genjax.registry", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "match the registry" in done.stdout
