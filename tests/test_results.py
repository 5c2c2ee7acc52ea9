"""The committed results: every report under notebooks/results/ is what `report` writes now from
the runs committed beside it, so no table can drift from its files."""

from pathlib import Path

import pytest

from minifreeze import report, runs as R, sweep

RESULTS = Path(__file__).resolve().parents[1] / "notebooks" / "results"
WITH_RUNS = sorted({p.parent.parent for p in RESULTS.glob("*/*/metrics.json")})
TABLES = ("summary.md", "summary.csv", "runs.csv", "results.json")


@pytest.mark.parametrize("folder", WITH_RUNS, ids=lambda p: p.name)
def test_committed_report_is_what_report_writes_from_the_committed_runs(folder, tmp_path):
    skipped: list[str] = []
    runs = report.load_runs(folder, skipped=skipped)
    assert not skipped, skipped  # every committed metrics.json keeps its checksum
    report.write_report(runs, tmp_path)
    for name in TABLES:
        assert (folder / name).read_text() == (tmp_path / name).read_text(), (
            f"{folder.name}/{name} differs from what `python -m minifreeze report "
            f"notebooks/results/{folder.name}` writes now: run it and commit the result")


@pytest.mark.parametrize("folder", WITH_RUNS, ids=lambda p: p.name)
def test_committed_runs_name_their_spec_and_environment(folder):
    for path in sorted(folder.glob("*/metrics.json")):
        m = report.load_runs(folder)
        run = next(r for r in m if r["run"] == path.parent.name)
        assert R.RunSpec.from_dict(run["spec"]).name == path.parent.name
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
    assert len(report.load_runs(tmp_path / "pub")) == 2
