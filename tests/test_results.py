"""The committed results: every report under notebooks/results/ is what `report` writes now from
the runs committed beside it, so no table can drift from its files."""

import json
from pathlib import Path

import pytest

from minifreeze.lab import pages, results, runs as R, sweep, tables

RESULTS = Path(__file__).resolve().parents[1] / "notebooks" / "results"
WITH_RUNS = sorted({p.parent.parent for p in RESULTS.glob("*/*/metrics.json")})
TABLES = ("summary.md", "summary.csv", "runs.csv", "results.json")


@pytest.mark.parametrize("folder", WITH_RUNS, ids=lambda p: p.name)
def test_committed_report_is_what_report_writes_from_the_committed_runs(folder, tmp_path):
    skipped: list[str] = []
    runs = results.load_runs(folder, skipped=skipped)
    assert not skipped, skipped  # every committed metrics.json keeps its checksum
    pages.write_report(runs, tmp_path)
    for name in TABLES:
        assert (folder / name).read_text() == (tmp_path / name).read_text(), (
            f"{folder.name}/{name} differs from what `python -m minifreeze report "
            f"notebooks/results/{folder.name}` writes now: run it and commit the result")


@pytest.mark.parametrize("folder", WITH_RUNS, ids=lambda p: p.name)
def test_committed_runs_name_their_spec_and_environment(folder):
    for path in sorted(folder.glob("*/metrics.json")):
        m = results.load_runs(folder)
        run = next(r for r in m if r["run"] == path.parent.name)
        spec = R.RunSpec.from_dict(run["spec"])  # a sweep names the folder by its spec; make
        assert path.parent.name in (spec.name, spec.config.method)  # mnist by the method
        assert run.get("environment"), f"{path}: where it ran is not recorded"


def test_there_are_committed_runs():
    assert WITH_RUNS, "notebooks/results/ holds no committed run"


def test_publish_copies_finished_runs_and_small_models_only(tmp_path):
    from minifreeze.train import TrainConfig
    specs = sweep.expand_grid(["lenet300"], ["snip"], [0.99], [0],
                              base=TrainConfig(epochs=1, batch_size=50, warmup_steps=0,
                                               lr=0.05, shards=1),
                              limit_train=200, limit_test=100)
    sweep.sweep(specs, tmp_path / "runs", progress=False)
    (tmp_path / "runs" / "killed").mkdir()
    (tmp_path / "runs" / "killed" / "metrics.json").write_text("{")
    copied = R.publish(tmp_path / "runs", tmp_path / "pub", max_model_bytes=100_000)
    assert sorted(copied) == sorted(s.name for s in specs)
    dense, snip = (tmp_path / "pub" / specs[0].name), (tmp_path / "pub" / specs[1].name)
    assert (dense / "metrics.json").is_file() and not (dense / "model.mfz").exists()  # 1 MB
    assert (snip / "model.mfz").is_file()  # a few KB
    assert R.publish(tmp_path / "runs", tmp_path / "pub") == []  # already there
    assert len(results.load_runs(tmp_path / "pub")) == 2
    # a published run counts as finished, the large model file left out by name and checksum
    assert all(R.finished(tmp_path / "pub" / s.name, s) is not None for s in specs)
    # a published folder publishes again (a sweep resumed in a copy of it, as make paper does)
    assert sorted(R.publish(tmp_path / "pub", tmp_path / "again")) == sorted(copied)
    assert (tmp_path / "again" / specs[0].name / R.LEFT_OUT).read_bytes() == \
        (dense / R.LEFT_OUT).read_bytes()
    assert all(R.finished(tmp_path / "again" / s.name, s) is not None for s in specs)
    (dense / R.LEFT_OUT).write_text('{"sha256": "0"}')  # a wrong checksum is not trusted
    assert R.finished(dense, specs[0]) is None


PAGES = [RESULTS.parents[1] / "README.md"] + sorted((RESULTS.parents[1] / "docs").glob("*.md"))


@pytest.mark.parametrize("page", [p for p in PAGES if p.is_file()], ids=lambda p: p.name)
def test_generated_tables_in_pages_are_current(page):
    text = page.read_text()
    assert pages.fill_page(text, page.parent) == text, (
        f"{page.name}: a generated table differs from the committed runs; run `python -m "
        f"minifreeze report <folder> --page {page.name}` and commit the result")


def test_fill_page_rewrites_only_between_its_markers(tmp_path):
    runs = tmp_path / "res"
    for i, acc in enumerate((0.9, 0.92)):
        (runs / f"r{i}").mkdir(parents=True)
        (runs / f"r{i}" / "metrics.json").write_text(json.dumps(R.seal(
            {"model": "lenet5", "method": "snip", "rate": 0.99, "seed": i, "test_accuracy": acc,
             "trained_params": 10, "compression": 2.0, "file_bytes": 100, "epochs": 3,
             "train_seconds": 1.0})))
    page = "before\n<!-- table: res pivot -->\nstale\n<!-- /table -->\nafter\n"
    new = pages.fill_page(page, tmp_path)
    assert new.startswith("before\n<!-- table: res pivot -->\n| lenet5 (2 seeds) | q = 0.99 |")
    assert "91.00 +- 1.41" in new and new.endswith("<!-- /table -->\nafter\n")
    assert pages.fill_page(new, tmp_path) == new
    with pytest.raises(results.ReportError, match="unknown kind"):
        pages.fill_page(page.replace("pivot", "nonsense"), tmp_path)


def test_a_report_without_its_runs_still_feeds_pages(tmp_path):
    """A folder that holds only a committed summary.csv (the study's runs were not committed)
    gives the tables that need only the groups, read back with the numbers `aggregate` gave."""
    groups = results.read_summary(RESULTS / "study" / "summary.csv")
    (tmp_path / "res").mkdir()
    tables.write_csv(tmp_path / "res" / "summary.csv", groups,
                     ("diverged",) + tables.AGGREGATE_COLUMNS)
    assert results.read_summary(tmp_path / "res" / "summary.csv") == groups
    made = pages.folder_tables(tmp_path / "res")
    assert "layers" not in made and "runs" not in made and "(seed 0)" in made["pivot"]
    # no per-seed values there: Welch's test on the means and stds
    assert "| lenet5 | -0.08 [-0.27, +0.11] p 0.22 (not separable) |" in made["compare"]
    page = "<!-- table: res compare -->\n<!-- /table -->\n"
    assert pages.fill_page(page, tmp_path) == page.replace("\n<!--", "\n" + made["compare"] +
                                                           "\n<!--")


def test_a_page_compares_any_two_methods():
    page = "<!-- table: study compare freezenet random_freeze -->\nold\n<!-- /table -->\n"
    new = pages.fill_page(page, RESULTS)
    assert "| freezenet - random_freeze | q = 0.9 |" in new and "old" not in new
    with pytest.raises(results.ReportError, match="only compare .* and pivot"):
        pages.fill_page(page.replace("compare", "groups"), RESULTS)


def test_a_pivot_shows_the_methods_it_names_in_their_order():
    page = "<!-- table: study pivot snip freezenet -->\n<!-- /table -->\n"
    new = pages.fill_page(page, RESULTS)
    rows = [line.split(" | ")[0] for line in new.splitlines() if line.startswith("| ")
            and not line.startswith("| ---")]
    assert rows == ["| lenet300 (3 seeds)", "| snip", "| freezenet",
                    "| lenet5 (3 seeds)", "| snip", "| freezenet"]
    with pytest.raises(results.ReportError, match="no run of gmq there"):
        pages.fill_page(page.replace("freezenet", "gmq"), RESULTS)


def test_a_page_lists_a_folders_runs():
    page = "<!-- table: paper runs -->\n<!-- /table -->\n"
    new = pages.fill_page(page, RESULTS)
    assert "| method | rate | test accuracy |" in new and "| freezenet | 0.995 |" in new


def test_a_changed_default_renames_no_run():
    """ELSA's first phase became GMP's after the committed runs were named: the runs of either
    sparsifier keep their names, and the new default never takes an old run's name."""
    import dataclasses
    from minifreeze.elsa import ElsaOptions
    folder = RESULTS / "gradual"
    specs = {p.parent.name: R.RunSpec.from_dict(json.loads(p.read_text())["spec"])
             for p in folder.glob("lenet5-elsa-s0-*/metrics.json")}
    by = {s.config.options.sparsifier: (name, s) for name, s in specs.items()}
    assert set(by) == {"snip", "gmp"}
    for sparsifier, (name, spec) in by.items():
        assert spec.name == name  # named as when it ran
    snip_name, snip = by["snip"]
    default = dataclasses.replace(snip, config=dataclasses.replace(
        snip.config, options=ElsaOptions(levels=snip.config.options.levels)).resolved())
    assert default.config.options.sparsifier == "gmp" and default.name == by["gmp"][0]
    assert default.name != snip_name
