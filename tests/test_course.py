"""The rendered course (docs/course/, `make course`) is the committed course, executed in full mode.

A notebook changed without re-rendering its copy fails here, with the command that fixes it.
"""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("render", ROOT / "notebooks" / "render.py")
render = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(render)

SOURCES = render.sources()
NAMES = [p.relative_to(render.NOTEBOOKS).as_posix() for p in SOURCES]


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def drift(source: Path, copy: Path) -> str | None:
    """Why `copy` is not `source` executed, or None when its cells are the source's."""
    if not copy.exists():
        return "has no rendered copy"
    a = nbformat.read(source, as_version=nbformat.NO_CONVERT)
    b = nbformat.read(copy, as_version=nbformat.NO_CONVERT)
    if len(a.cells) != len(b.cells):
        return f"has {len(a.cells)} cells, its rendered copy {len(b.cells)}"
    for i, (x, y) in enumerate(zip(cells(a), cells(b))):
        if x != y:
            return f"cell {i} differs from its rendered copy's"
    return None


@pytest.mark.parametrize("name", NAMES)
def test_rendered_copy_is_the_committed_notebook_executed_in_full_mode(name):
    source, copy = render.NOTEBOOKS / name, render.OUT / name
    why = drift(source, copy)
    assert why is None, f"notebooks/{name} {why}: run `make course COURSE={name[:-6]}` and commit docs/course/"
    nb = nbformat.read(copy, as_version=nbformat.NO_CONVERT)
    assert nb.metadata.get("minifreeze", {}).get("mode") == "full", f"docs/course/{name} was not rendered in full mode"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"docs/course/{name} has a cell that did not run"
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"docs/course/{name}: cells {errors} raised"


@pytest.mark.parametrize("name", NAMES)
def test_rendered_copy_read_the_results_committed_now(name):
    """A rendered copy records the committed results folders it read (their digests): a run
    published into one of them, or a report rewritten, without re-rendering fails here."""
    copy = render.OUT / name
    if not copy.exists():
        pytest.skip("no rendered copy (the test above fails)")
    record = nbformat.read(copy, as_version=nbformat.NO_CONVERT).metadata.get("minifreeze", {})
    now = render.results_read(render.NOTEBOOKS / name)
    stale = sorted(k for k in set(now) | set(record.get("results", {}))
                   if now.get(k) != record.get("results", {}).get(k))
    assert not stale, (f"docs/course/{name} was rendered from other committed results in "
                       f"notebooks/results/{{{', '.join(stale)}}}: run `make course "
                       f"COURSE={name[:-6]}` and commit docs/course/")


def test_a_changed_result_file_is_seen(tmp_path, monkeypatch):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "summary.csv").write_text("a\n1\n")
    (tmp_path / "demo" / "figure.png").write_bytes(b"png")
    nb = tmp_path / "n.ipynb"
    nb.write_text('{"cells": [{"cell_type": "code", "source": ["RESULTS / \\"demo\\"\\n"]}]}')
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    before = render.results_read(nb)
    assert list(before) == ["demo"]
    (tmp_path / "demo" / "figure.png").write_bytes(b"other")  # a figure: not a data file
    assert render.results_read(nb) == before
    (tmp_path / "demo" / "summary.csv").write_text("a\n2\n")
    assert render.results_read(nb) != before


def test_no_rendered_copy_without_a_source():
    extra = [p.relative_to(render.OUT).as_posix() for p in render.rendered(render.OUT)
             if p.relative_to(render.OUT).as_posix() not in NAMES]
    assert not extra, f"docs/course/ holds {extra}, whose notebooks no longer exist: delete them"


def test_drift_is_caught_and_the_renderer_writes_nothing_half_way(tmp_path):
    """Render the quickest notebook in fast mode, then change one character of a copy of it."""
    pytest.importorskip("papermill")
    src = render.NOTEBOOKS / "03_seed_init.ipynb"
    assert render.main(["03", "--fast", "--out", str(tmp_path)]) == 0
    copy = tmp_path / "03_seed_init.ipynb"
    assert drift(src, copy) is None
    assert nbformat.read(copy, as_version=nbformat.NO_CONVERT).metadata["minifreeze"]["mode"] == "fast"
    assert not list(tmp_path.glob(".*")), "a partial copy was left behind"
    assert "03_seed_init.ipynb" in (tmp_path / "README.md").read_text()

    nb = nbformat.read(copy, as_version=nbformat.NO_CONVERT)
    nb.cells[1].source += " "
    nbformat.write(nb, copy)
    assert drift(src, copy) == "cell 1 differs from its rendered copy's"


def test_renderer_refuses_an_unknown_notebook(tmp_path, capsys):
    with pytest.raises(SystemExit):
        render.main(["99_nothing", "--out", str(tmp_path)])
    assert "no notebook in notebooks/ starts with ['99_nothing']" in capsys.readouterr().err


def test_rendered_copies_name_no_machine_path():
    import re
    for path in render.rendered(render.OUT):
        found = re.findall(r'"(/(?:home|root|tmp|work|Users)/[^"]{0,60})', path.read_text(encoding="utf-8"))
        assert not found, f"docs/course/{path.relative_to(render.OUT)} names machine paths: {found[:3]}"
