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
