"""The committed notebooks: output-free, valid, opening with a parameters cell, listed in the course,
naming a kernel that exists.

Executing them is `make notebooks` (run by CI); these checks are cheap and run with `make test`.
Adding a notebook is adding a file to notebooks/ (or to notebooks/solutions/, the answers to the
exercises a student implements): every check here picks it up.
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb")) + sorted(NOTEBOOK_DIR.glob("solutions/*.ipynb"))
CLEAR = "clear all outputs before committing (Jupyter: Edit > Clear Outputs of All Cells)"


def _name(path: Path) -> str:
    """The notebook's path inside notebooks/, as notebooks/README.md lists it."""
    return path.relative_to(NOTEBOOK_DIR).as_posix()


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR.name}/"


@pytest.fixture(params=NOTEBOOKS, ids=[_name(p) for p in NOTEBOOKS])
def notebook(request):
    nb = nbformat.read(request.param, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    return _name(request.param), nb


def test_committed_notebook_has_no_outputs(notebook):
    name, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has outputs; {CLEAR}"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count; {CLEAR}"


def test_notebook_opens_with_a_parameters_cell(notebook):
    name, nb = notebook
    assert nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        f"{name}: expected a markdown title cell first"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", []), \
        f"{name}: the first code cell should carry the tag 'parameters'"
    assert "MINIFREEZE_FAST" in first_code.source, \
        f"{name}: the parameters cell should read MINIFREEZE_FAST to shrink sizes in CI"


def test_notebook_is_listed_in_the_course():
    listing = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    missing = [_name(p) for p in NOTEBOOKS if _name(p) not in listing]
    assert not missing, f"notebooks/README.md does not list {missing}"


def test_every_solution_answers_a_course_notebook():
    course = {p.name for p in NOTEBOOK_DIR.glob("*.ipynb")}
    orphans = [_name(p) for p in NOTEBOOK_DIR.glob("solutions/*.ipynb") if p.name not in course]
    assert not orphans, f"solutions without a course notebook of the same name: {orphans}"


def test_the_kernel_the_notebooks_name_exists(notebook):
    """`make install` must give the kernel each notebook asks for, or Jupyter opens it with none."""
    from jupyter_client.kernelspec import KernelSpecManager
    name, nb = notebook
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel, f"{name}: metadata.kernelspec.name is missing"
    found = KernelSpecManager().find_kernel_specs()
    assert kernel in found, f"{name}: kernel {kernel!r} is not installed here (found {sorted(found)})"


def test_figures_render_whatever_mplbackend_says(notebook):
    """With MPLBACKEND=Agg exported (common on headless servers) pyplot draws nowhere; the inline
    magic before the import makes every notebook show its figures anyway."""
    name, nb = notebook
    for cell in nb.cells:
        if cell.cell_type == "code" and "import matplotlib.pyplot" in cell.source:
            head = cell.source.split("import matplotlib.pyplot")[0]
            assert "%matplotlib inline" in head, \
                f"{name}: put '%matplotlib inline' before importing pyplot"


def _check_functions(path: Path) -> dict[str, str]:
    """The source of every top-level `def check_*` in a notebook's code cells."""
    import ast
    out = {}
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        code = "".join(cell["source"])
        lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        tree = ast.parse("\n".join(lines))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
                out[node.name] = ast.get_source_segment("\n".join(lines), node)
    return out


@pytest.mark.parametrize("solution", sorted(NOTEBOOK_DIR.glob("solutions/*.ipynb")),
                         ids=lambda p: p.name)
def test_each_stub_is_checked_exactly_as_its_solution(solution):
    """A stub's check and its solution's are the same code, so passing the solution's proves the
    course's check accepts the right answer (and CI runs the solution)."""
    course = _check_functions(NOTEBOOK_DIR / solution.name)
    answer = _check_functions(solution)
    assert answer, f"{solution.name}: the solution defines no check_* function"
    for name, code in answer.items():
        assert name in course, f"{solution.name}: {name} is not in the course notebook"
        assert course[name] == code, f"{solution.name}: {name} differs from the course notebook's"


QUESTION = re.compile(r"^\*\*Question (\d\d\.[A-Z])\*\*", re.MULTILINE)


def test_every_inline_question_has_its_answer_and_no_answer_is_orphaned():
    asked = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        for cell in nb.cells:
            for key in QUESTION.findall(cell.source) if cell.cell_type == "markdown" else ():
                assert key[:2] == path.name[:2], f"{_name(path)} asks question {key}: number it {path.name[:2]}.X"
                assert key not in asked, f"question {key} is asked twice"
                asked[key] = _name(path)
    answers = set(re.findall(r"^## (\d\d\.[A-Z])\s*$", (NOTEBOOK_DIR / "solutions" / "questions.md")
                             .read_text(encoding="utf-8"), re.MULTILINE))
    assert asked, "no notebook asks an inline question (a markdown cell starting **Question NN.A**)"
    assert not set(asked) - answers, f"solutions/questions.md does not answer {sorted(set(asked) - answers)}"
    assert not answers - set(asked), f"solutions/questions.md answers {sorted(answers - set(asked))}, which no notebook asks"


def test_every_inline_question_has_a_cell_for_the_students_answer():
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=nbformat.NO_CONVERT).cells
        for i, cell in enumerate(cells):
            if cell.cell_type == "markdown" and QUESTION.match(cell.source):
                after = cells[i + 1] if i + 1 < len(cells) else None
                assert after is not None and after.cell_type == "markdown" and \
                    after.source.startswith("**Your answer**"), \
                    f"{_name(path)}: question {QUESTION.match(cell.source).group(1)} has no answer cell after it"


def test_every_notebook_states_the_time_to_run_it_and_to_work_through_it():
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):  # the course (solutions are part of theirs)
        first = nbformat.read(path, as_version=nbformat.NO_CONVERT).cells[0].source
        assert "**Time.**" in first, f"{_name(path)}: its first cell says how long it runs"
        assert re.search(r"\*\*To work through:\*\* about \d+ minutes", first), \
            f"{_name(path)}: its first cell says how long it takes to work through"
