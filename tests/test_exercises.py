"""The course's "change X" exercises survive their own changes: each notebook runs to the end, in
fast mode, with the parameters an exercise tells the student to set (papermill injects them after
the cell tagged `parameters`), and its asserts adapt instead of failing."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

EXERCISES = [
    ("00_results_first.ipynb", {"SEEDS": [0, 1]}),                        # 00.1: a band
    ("05_freeze_vs_prune.ipynb", {"LR": 0.2}),                            # 05.3: a larger step
    ("05_freeze_vs_prune.ipynb", {"SEED": 1}),                            # 05.4: another seed
    ("07_study.ipynb", {"METHODS": ["freezenet", "snip"], "SEEDS": [0, 1, 2]}),  # 07.2
    ("10_layer_collapse.ipynb", {"RATE": 0.995}),                         # 10.1: a milder rate
]


@pytest.mark.parametrize("notebook, parameters", EXERCISES,
                         ids=[f"{n[:2]}-{'-'.join(p)}" for n, p in EXERCISES])
def test_exercise_runs_to_the_end(notebook, parameters, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIFREEZE_FAST", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    papermill.execute_notebook(str(NOTEBOOKS / notebook), str(tmp_path / notebook),
                               parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                               progress_bar=False)
