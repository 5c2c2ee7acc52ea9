"""The course's "change X" exercises survive their own changes: each notebook runs to the end, in
fast mode, with the parameters an exercise tells the student to set (papermill injects them after
the cell tagged `parameters`), and its asserts adapt instead of failing."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

EXERCISES = [  # every exercise that changes the parameters cell only, as its text says
    ("00_results_first.ipynb", {"SEEDS": [0, 1]}),                        # 00.1: a band
    ("00_results_first.ipynb", {"METHODS": ["freezenet", "snip", "grad_freeze"]}),  # 00.2
    ("02_im2col.ipynb", {"PATCH": 7, "STRIDE": 3}),                       # 02.1: overlapping patches
    ("02_im2col.ipynb", {"BATCH": 1}),                                    # 02.5: a batch of one
    ("03_seed_init.ipynb", {"SEED": 7}),                                  # 03.1: another seed
    ("03_seed_init.ipynb", {"RATE": 0.9}),                                # 03.4: a denser mask
    ("04_saliency_masks.ipynb", {"RATE": 0.999}),                         # 04.2: a layer near empty
    ("04_saliency_masks.ipynb", {"BATCH": 10}),                           # 04.5: a smaller batch
    ("05_freeze_vs_prune.ipynb", {"RATES": [0.99, 0.995, 0.999]}),        # 05.2: three rates
    ("05_freeze_vs_prune.ipynb", {"LR": 0.2}),                            # 05.3: a larger step
    ("05_freeze_vs_prune.ipynb", {"SEED": 1}),                            # 05.4: another seed
    ("06_pipeline.ipynb", {"METHOD": "snip"}),                            # 06.1: pruned
    ("06_pipeline.ipynb", {"METHOD": "grad_freeze"}),                     # 06.1: the other score
    ("06_pipeline.ipynb", {"RATE": 0.999}),                               # 06.3: a higher rate
    ("07_study.ipynb", {"EXECUTOR": "process"}),                          # 07.1: processes
    ("08_weightmom.ipynb", {"ALPHA": 0.5}),                               # 08.1: the correction on
    ("08_weightmom.ipynb", {"MOM_BETA": 0.0}),                            # 08.2: WeightMom as GMP
    ("08_weightmom.ipynb", {"RATE": 0.999}),                              # 08.3: a higher rate
    ("08_weightmom.ipynb", {"PRUNE_START": 0.0, "PRUNE_END": 0.3}),       # 08.4: an earlier end
    ("09_elsa.ipynb", {"LEVELS": [0.995, 0.99, 0.95, 0.9]}),              # 09.2: a fourth level
    ("09_elsa.ipynb", {"SPARSIFIER": "gmp"}),                             # 09.3: GMP's first phase
    ("10_layer_collapse.ipynb", {"RATE": 0.995}),                         # 10.1: a milder rate
]


KEYS = {  # exercise -> (what its run prints, what its answer key says): the key's claims that
    # hold in fast mode too (no training in them), checked against the run
    ("03_seed_init.ipynb", "RATE"): [
        ("conv2.w  masked  bitmap         9,940   25,000   3,125", "keeps 9,940 of `conv2.w`'s 25,000"),
        ("fc1.w    masked  delta         30,341  400,000  30,619", "30,341 of 400,000")],
    ("04_saliency_masks.ipynb", "RATE"): [
        ("|g| mask: layers with no kept weight: fc1.w", "keeps no weight of `fc1.w` at all"),
        ("fc1.w     400,000         0    0.00%           1", "and the |θ·g| mask one")],
    ("02_im2col.ipynb", "PATCH-STRIDE"): [("cols (49, 64)", "8 × 8 = 64 columns of 49")],
    ("06_pipeline.ipynb", "RATE"): [("compression 426.8", "compression 426.8")],
}


def _printed(path) -> str:
    import nbformat
    return "".join(o.get("text", "") for c in nbformat.read(path, as_version=4).cells
                   if c.cell_type == "code" for o in c.outputs)


def _answers(notebook) -> str:
    import nbformat
    return "".join(c.source for c in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells
                   if c.source.startswith("**Answers.**"))


@pytest.mark.parametrize("notebook, parameters", EXERCISES,
                         ids=[f"{n[:2]}-{'-'.join(p)}" for n, p in EXERCISES])
def test_exercise_runs_to_the_end(notebook, parameters, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIFREEZE_FAST", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    papermill.execute_notebook(str(NOTEBOOKS / notebook), str(tmp_path / notebook),
                               parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                               progress_bar=False)
    keys = KEYS.get((notebook, "-".join(parameters)), [])
    printed, answers = (_printed(tmp_path / notebook), _answers(notebook)) if keys else ("", "")
    for shown, said in keys:
        assert shown in printed, f"the run no longer prints {shown!r}"
        assert said in answers, f"the answer key no longer says {said!r}"


def test_exercise_10_1_prints_what_its_answer_says(tmp_path, monkeypatch):
    """10.1 as a student does it (RATE = 0.995 in the parameters cell, full mode: a few
    seconds), and the answer key's claims checked against what the run prints."""
    papermill = pytest.importorskip("papermill")
    import nbformat
    monkeypatch.setenv("MINIFREEZE_FAST", "0")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    out = tmp_path / "10.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "10_layer_collapse.ipynb"), str(out),
                               parameters={"RATE": 0.995}, cwd=str(NOTEBOOKS),
                               kernel_name="python3", progress_bar=False)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                   if c.cell_type == "code" for o in c.outputs)
    answer = "".join(c.source for c in nbformat.read(NOTEBOOKS / "10_layer_collapse.ipynb",
                                                     as_version=4).cells
                     if c.source.startswith("**Answers.**"))
    # the key: no layer emptied; GraSP keeps 220 of fc1's and 868 of fc2's, random 2 of conv1's
    assert "GraSP's mask at q = 0.995 empties no layer" in text
    row = next(line for line in text.splitlines() if line.startswith("grasp "))
    assert row.split() == ["grasp", "270", "794", "220", "868", "2152"]
    assert "keeps 220 of\n   `fc1`'s weights and 868 of `fc2`'s" in answer
    assert "random          2 " in text and "the random mask 2 of `conv1`'s" in answer
    spread = text.split("grasp_prune   logits' spread over images ")[1][:6]
    frozen = text.split("grasp_freeze  logits' spread over images ")[1][:5]
    assert (spread, frozen) == ("0.0529", "0.273")
    assert "spread 0.053, the frozen one's\n   0.27" in answer


def test_exercise_07_2_in_the_kept_folder(tmp_path, monkeypatch):
    """07.2 as written: run 07, then again with two methods, three seeds and ROOT set to the
    first run's folder. The second sweep trains only the new runs (the key: seeds not run
    before, for dense and each method and rate) and its tables use its own runs only."""
    papermill = pytest.importorskip("papermill")
    import nbformat
    monkeypatch.setenv("MINIFREEZE_FAST", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    root = tmp_path / "runs"
    outputs = []
    for i, parameters in enumerate(({"ROOT": str(root)},
                                    {"ROOT": str(root), "METHODS": ["freezenet", "snip"],
                                     "SEEDS": [0, 1, 2]})):
        out = tmp_path / f"07-{i}.ipynb"
        papermill.execute_notebook(str(NOTEBOOKS / "07_study.ipynb"), str(out),
                                   parameters=parameters, cwd=str(NOTEBOOKS),
                                   kernel_name="python3", progress_bar=False)
        outputs.append("".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                               if c.cell_type == "code" for o in c.outputs))
    # fast mode: one rate; the first run had seed 0 of dense and six methods (7 runs); the second
    # asks for dense, FreezeNet and SNIP at seeds 0-2 (9), of which seed 0's three are finished
    assert "first sweep: 7 runs trained" in outputs[0] and ", 0 finished before" in outputs[0]
    assert "first sweep: 6 runs trained" in outputs[1] and ", 3 finished before" in outputs[1]
    assert "second sweep: 0 trained, 9 already finished" in outputs[1]
    assert "grad_freeze" not in outputs[1].split("second sweep")[1]  # this sweep's runs only
