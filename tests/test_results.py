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


def test_price_gives_the_sizes_a_run_records_and_prices_only_that_file(tmp_path, capsys):
    """`price` computes afterwards what a run measures as it finishes (storage.stored_sizes), for
    runs recorded before runs measured it; load_runs adds them only where the model file is the
    one priced, and a run without its model file is named, not guessed."""
    from minifreeze.lab.cli import main
    from minifreeze.train import TrainConfig
    specs = sweep.expand_grid(["lenet300"], ["freezenet", "snip"], [0.99], [0],
                              base=TrainConfig(epochs=1, batch_size=50, warmup_steps=0,
                                               lr=0.05, shards=1),
                              limit_train=200, limit_test=100)
    sweep.sweep(specs, tmp_path / "runs", progress=False)
    measured = {}
    for s in specs:  # as runs were before they measured it: the sizes left out, sealed again
        path = tmp_path / "runs" / s.name / "metrics.json"
        m = json.loads(path.read_text())
        measured[s.name] = {k: m.pop(k) for k in ("gzip_bytes", "dense_gzip_bytes")}
        assert R.priced_sizes(path.parent) == measured[s.name]  # afterwards = while it finished
        path.write_text(json.dumps(R.seal(m)))
    R.publish(tmp_path / "runs", tmp_path / "pub", max_model_bytes=100_000)  # dense left out
    pub = tmp_path / "pub"
    assert all("gzip_bytes" not in r for r in results.load_runs(pub))
    assert main(["price", str(pub)]) == 0
    out = capsys.readouterr().out
    assert "priced 2 run(s)" in out and f"not priced: {specs[0].name}" in out
    assert "model.mfz was not committed" in out
    by = {r["run"]: r for r in results.load_runs(pub)}
    for s in specs[1:]:
        assert {k: by[s.name][k] for k in measured[s.name]} == measured[s.name]
        assert by[s.name]["sizes_priced_after"] is True
    assert "gzip_bytes" not in by[specs[0].name]
    report = pages.write_report(list(by.values()), tmp_path / "report")["markdown"]
    assert "computed afterwards" in report and "| lenet300 | snip | 0.99 |" in report
    # an entry prices only the model file it names: another file, no sizes
    priced = json.loads((pub / R.PRICED).read_text())
    priced[specs[1].name]["model_sha256"] = "0" * 64
    (pub / R.PRICED).write_text(json.dumps(priced))
    assert "gzip_bytes" not in {r["run"]: r for r in results.load_runs(pub)}[specs[1].name]
    (pub / R.PRICED).write_text("{")
    with pytest.raises(results.ReportError, match="storage_priced.json: unreadable"):
        results.load_runs(pub)
    assert main(["price", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


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


def _budget_run(method, rate, seed, acc, steps=None, *, epochs=1, limit_train=None,
                val_fraction=0.0, model="lenet300"):
    """A sealed run of `epochs` epochs; with `steps`, the end probe records them (as runs do)."""
    run = {"model": model, "method": method, "rate": rate, "seed": seed, "test_accuracy": acc,
           "trained_params": 10, "compression": 2.0, "file_bytes": 100, "epochs": epochs,
           "train_seconds": 1.0, "config": {"batch_size": 100},
           "spec": {"dataset": "mnist", "limit_train": limit_train, "val_fraction": val_fraction}}
    if steps is not None:
        probe = {"dead": {"fc1": 0}, "units": {"fc1": 300}}
        run["dead_units"] = [{"at": "step 100", "step": 100, **probe},
                             {"at": "end", "step": steps, **probe}]
    return R.seal(run)


def test_steps_of_reads_the_end_probe_else_counts_them_from_the_spec():
    assert results.steps_of(_budget_run("snip", 0.9, 0, 0.9, steps=1234)) == 1234
    assert results.steps_of(_budget_run("snip", 0.9, 0, 0.9, limit_train=5_000)) == 50
    assert results.steps_of(_budget_run("snip", 0.9, 0, 0.9, epochs=2)) == 1_200
    assert results.steps_of(_budget_run("snip", 0.9, 0, 0.9, limit_train=250)) == 3  # ceil
    assert results.steps_of(_budget_run("snip", 0.9, 0, 0.9, val_fraction=0.1)) == 540


def _length_runs():
    """FreezeNet, SNIP and dense at q = 0.9, seeds 0-2, at 50 and 600 steps: FreezeNet ahead by
    10 points at 50 steps and by 0.1, 0.2, 0.3 points at 600."""
    runs = []
    for s in range(3):
        runs += [_budget_run("dense", 0.0, s, 0.9, limit_train=5_000),
                 _budget_run("freezenet", 0.9, s, 0.8 + 0.01 * s, limit_train=5_000),
                 _budget_run("snip", 0.9, s, 0.7 + 0.01 * s, limit_train=5_000),
                 _budget_run("dense", 0.0, s, 0.99, steps=600),
                 _budget_run("freezenet", 0.9, s, 0.97 + 0.001 * (s + 1), steps=600),
                 _budget_run("snip", 0.9, s, 0.97, steps=600)]
    return runs


def test_length_rows_pair_by_seed_within_each_budget_never_across():
    runs = _length_runs()
    assert results.several_budgets(runs) and not results.several_budgets(runs[:3])
    short, long_ = results.length_rows(runs)
    assert (short["steps"], long_["steps"]) == (50, 600)
    assert short["difference"] == pytest.approx(0.10) and short["dense"] == pytest.approx(0.9)
    assert short["p"] == 0.0  # the same difference in every seed
    assert long_["difference"] == pytest.approx(0.002) and long_["dense"] == pytest.approx(0.99)
    # differences 0.001, 0.002, 0.003: sd 0.001, t = 0.002 / (0.001 / sqrt 3) with 2 df
    from scipy import stats
    assert long_["p"] == pytest.approx(2 * stats.t.sf(0.002 / (0.001 / 3 ** 0.5), 2))
    assert long_["p"] > 0.05 and long_["verdict"] == "not separable with 3 seeds"


def test_the_accuracy_figure_is_drawn_per_group_however_many_seeds(tmp_path):
    """A report draws accuracy per epoch where its runs form at most MAX_CURVE_GROUPS (network,
    method, rate) groups, however many runs: the paper protocol's LeNet-5 with conv ReLU (27
    runs in 7 groups) gets it, a study of 21 groups does not; reported into the same folder, the
    study's report removes the figure the paper's left there, and keeps the ones it draws
    itself."""
    paper = [r for r in results.load_runs(RESULTS / "paper_lecun")
             if results.network_of(r) == "lenet5_relu"]
    assert len(paper) > 16 and len(results.group_runs(paper)) <= pages.MAX_CURVE_GROUPS
    assert "accuracy.png" in pages.write_report(paper, tmp_path / "paper")["files"]
    study = results.load_runs(RESULTS / "study_relu")
    assert len(results.group_runs(study)) > pages.MAX_CURVE_GROUPS
    assert "accuracy.png" not in pages.write_report(study, tmp_path / "study")["files"]
    files = pages.write_report(study, tmp_path / "paper")["files"]
    assert not (tmp_path / "paper" / "accuracy.png").exists()
    assert {"rates.png", "gap.png"} <= set(files)
    assert all((tmp_path / "paper" / f).is_file() for f in files)


def test_a_network_whose_groups_fit_gets_its_own_accuracy_figure(tmp_path):
    """Where a folder's groups are too many for one figure, each network whose own groups fit gets
    accuracy_<network>.png; a network whose groups do not (Fashion-MNIST's LeNet-5 grid, and its
    small VGG since its ninth group came in) gets one figure per rate, that rate's groups with
    dense. The paper protocol's folder (Caffe's LeNet-5 and LeNet-5 with conv ReLU, 10 groups)
    gets one figure per network. A later report into the same folder that draws accuracy.png
    removes them all."""
    fashion = results.load_runs(RESULTS / "fashion")
    vgg = [r for r in fashion if results.network_of(r) == "vgg"]
    lenet = [r for r in fashion if results.network_of(r) == "lenet5_relu"]
    assert len(results.group_runs(lenet)) > pages.MAX_CURVE_GROUPS
    assert len(results.group_runs(vgg)) > pages.MAX_CURVE_GROUPS
    files = pages.write_report(fashion, tmp_path)["files"]
    per_rate = [f"accuracy_{net}_q{q}.png" for net, rates in (
        ("lenet5_relu", ("0.9", "0.99", "0.995", "0.999")), ("vgg", ("0.9", "0.99", "0.995")))
        for q in rates]
    assert set(per_rate) <= set(files)
    assert not {"accuracy.png", "accuracy_lenet5_relu.png", "accuracy_vgg.png"} & set(files)
    assert all((tmp_path / f).is_file() for f in per_rate)
    import matplotlib.pyplot as plt
    drawn = dict(pages.accuracy_figures([r for r in lenet if "history" in r]))
    labels = [t.get_text().split(",")[:2]
              for t in drawn["accuracy_lenet5_relu_q0.99.png"].legends[0].get_texts()]
    for fig in drawn.values():
        plt.close(fig)
    assert sorted(labels) == sorted([["dense", " q = 0.0"]] + [  # dense and the rate's five methods
        [m, " q = 0.99"] for m in ("freezenet", "snip", "synflow_prune", "random_freeze",
                                   "random_prune")]), labels
    paper = results.load_runs(RESULTS / "paper_lecun")
    assert len(results.group_runs(paper)) > pages.MAX_CURVE_GROUPS
    assert {"accuracy_lenet5.png", "accuracy_lenet5_relu.png"} <= set(
        pages.write_report(paper, tmp_path / "paper")["files"])
    relu = [r for r in paper if results.network_of(r) == "lenet5_relu"]
    assert "accuracy.png" in pages.write_report(relu, tmp_path)["files"]
    assert not list(tmp_path.glob("accuracy_*.png"))


def test_a_length_study_reports_per_budget(tmp_path):
    runs = _length_runs()
    out = pages.write_report(runs, tmp_path)
    assert "length.png" in out["files"] and (tmp_path / "length.png").is_file()
    text = (tmp_path / "summary.md").read_text()
    assert "| lenet300 | 0.9 | 50 | 3 | 90.00 | 81.00 |" in text
    assert "| lenet300 | 0.9 | 600 | 3 | 99.00 | 97.20 |" in text
    assert json.loads((tmp_path / "results.json").read_text())["length"][0]["steps"] == 50
    assert "length" in pages.page_tables(results.aggregate(runs), runs)


def test_on_length_curve_places_a_run_between_the_budgets_measured():
    rows = results.length_rows(_length_runs())
    where = results.on_length_curve
    assert where(rows, "lenet300", 0.9, 20).startswith("20 steps is shorter than the shortest")
    assert "50 steps: freezenet - pruned +10.00 points" in where(rows, "lenet300", 0.9, 20)
    assert where(rows, "lenet300", 0.9, 600).startswith("on the committed curve at 600 steps")
    between = where(rows, "lenet300", 0.9, 200)
    assert between.startswith("200 steps lies between 50 steps") and "and 600 steps" in between
    assert where(rows, "lenet300", 0.9, 9_000).startswith("9,000 steps is longer than the longest")
    with pytest.raises(results.ReportError, match="no committed budget for lenet5 at q = 0.9"):
        where(rows, "lenet5", 0.9, 50)


def test_variant_pairs_set_each_sanity_check_against_its_mask_as_chosen():
    groups = [{"method": m} for m in ("dense", "freezenet", "snip", "snip_shuffled",
                                      "freezenet_redrawn", "synflow_prune_inverted")]
    assert results.variant_pairs(groups) == [("snip_shuffled", "snip"),
                                             ("freezenet_redrawn", "freezenet")]
    runs = [_budget_run(m, 0.99, s, a + 0.001 * s, steps=600)
            for m, a in (("snip", 0.95), ("freezenet", 0.96)) for s in range(3)]
    runs += [R.seal({**{k: v for k, v in _budget_run("snip", 0.99, s, 0.90, steps=600).items()
                        if k != "checksum"}, "config": {"batch_size": 100, "options": {"variant": "shuffled"}}})
             for s in range(3)]
    groups = results.aggregate(runs)
    assert ("snip_shuffled", "snip") in results.variant_pairs(groups)
    [row] = results.pair_rows(groups, [("snip_shuffled", "snip")])
    assert row["difference"] == pytest.approx(0.90 - 0.951) and row["seeds"] == 3
    assert "sanity" in pages.page_tables(groups, runs)


def test_a_folder_holds_one_data_set_and_a_report_names_any_but_mnist(tmp_path):
    """Every table averages by network, method and rate: runs of two data sets in one folder are
    refused with the counts, not averaged together; a Fashion-MNIST report says so on top, an
    MNIST one (and a run recorded before the field) says nothing, as before."""
    mnist = [_budget_run("dense", 0.0, s, 0.99) for s in range(2)]
    fashion = [R.seal({**_budget_run("dense", 0.0, s, 0.91), "dataset": "fashion-mnist"})
               for s in range(3)]
    assert results.dataset_of(mnist) == "mnist" and results.dataset_of([]) is None
    with pytest.raises(results.ReportError, match=r"mix data sets \(fashion-mnist: 3 runs, "
                                                  r"mnist: 2 runs\)"):
        results.aggregate(mnist + fashion)
    pages.write_report(fashion, tmp_path)
    assert (tmp_path / "summary.md").read_text().startswith("Data set: fashion-mnist (every run)")
    pages.write_report(mnist, tmp_path)
    assert (tmp_path / "summary.md").read_text().startswith("## Test accuracy")
    from minifreeze.lab import figures
    fig = figures.plot_rates(results.aggregate(fashion), data="fashion-mnist")
    assert fig.axes[0].get_title() == "lenet300 on fashion-mnist"  # _budget_run's network
    assert figures.plot_rates(results.aggregate(mnist)).axes[0].get_title() == "lenet300"


def test_a_network_trained_only_dense_gets_no_panel_against_the_rate():
    """Nothing of a dense-only network can be drawn against 1 - q (the small VGG while only its
    dense runs are in): the figures leave it out, its rows stay in the tables."""
    from minifreeze.lab import figures
    runs = [_budget_run(m, q, s, 0.9, model=model) for s in range(2)
            for model, m, q in (("lenet300", "dense", 0.0), ("lenet300", "freezenet", 0.99),
                                ("vgg", "dense", 0.0))]
    groups = results.aggregate(runs)
    for plot in (figures.plot_rates, figures.plot_gap, figures.plot_bytes):
        assert [ax.get_title() for ax in plot(groups).axes] == ["lenet300"]
    assert "| vgg | dense |" in pages.page_tables(groups)["groups"]


def _curve(method, rate, seed, accs, *, diverged=None, model="lenet5"):
    """A sealed run with test accuracy per epoch `accs`; with `diverged` ({"epoch", "step"}), one
    that stopped on a NaN loss after those epochs, as train records it: no test accuracy."""
    run = {**_budget_run(method, rate, seed, accs[-1] if accs else 0.0, epochs=len(accs) or 1,
                         model=model),
           "history": [{"epoch": e + 1, "test_accuracy": a} for e, a in enumerate(accs)]}
    del run["checksum"]
    if diverged is not None:
        run["diverged"] = {**diverged, "loss": "nan", "why": "loss is nan"}
        del run["test_accuracy"]
    return R.seal(run)


def test_a_run_that_diverged_is_named_in_the_accuracy_figure(tmp_path):
    """A run that diverged has no final accuracy, yet the figure of accuracy per epoch says it
    ran: its legend entry names the seed and where it diverged, the epochs it finished are drawn,
    and (not an end) its last one does not set the zoomed range. Caffe's dense under the paper
    protocol diverges at step 10 and was missing from accuracy_lenet5.png."""
    from minifreeze.lab import figures
    import matplotlib.pyplot as plt
    runs = [_curve("dense", 0.0, 0, [], diverged={"epoch": 1, "step": 10}),
            _curve("dense", 0.0, 1, [0.95, 0.97]),
            _curve("freezenet", 0.99, 0, [0.93, 0.96]),
            _curve("snip", 0.99, 0, [0.90], diverged={"epoch": 2, "step": 700})]
    curves = pages.curve_runs(runs)
    assert curves == runs
    fig = figures.plot_history(curves)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "dense, q = 0.0, 2 seeds; seed 0 diverged (epoch 1, step 10)" in labels, labels
    assert "snip, q = 0.99, seed 0; seed 0 diverged (epoch 2, step 700)" in labels, labels
    full, zoom = fig.axes
    assert len(full.get_lines()) == 3  # dense seed 1, FreezeNet, SNIP's first epoch; no mean
    assert zoom.get_ylim()[0] > 90  # from the runs that ended: 96% and 97%
    assert "accuracy.png" in pages.write_report(runs, tmp_path)["files"]
    paper = results.load_runs(RESULTS / "paper_lecun")
    drawn = dict(pages.accuracy_figures(pages.curve_runs(paper)))
    caffe = [t.get_text() for t in drawn["accuracy_lenet5.png"].legends[0].get_texts()]
    assert "dense, q = 0.0, seed 0; seed 0 diverged (epoch 1, step 10)" in caffe, caffe
    plt.close("all")


def test_the_gap_to_dense_is_drawn_only_where_dense_trained(tmp_path):
    """A network whose dense runs all diverged (Caffe's LeNet-5 under the paper protocol) has no
    gap to draw: gap.png leaves it out, and a report with no trained dense anywhere writes no
    gap.png at all (an empty panel said nothing); plot_gap alone says why it cannot draw."""
    from minifreeze.lab import figures
    trained = [_budget_run(m, q, s, 0.9 - q / 10) for s in range(2)
               for m, q in (("dense", 0.0), ("freezenet", 0.9), ("freezenet", 0.99))]
    caffe = [_curve("dense", 0.0, 0, [], diverged={"epoch": 1, "step": 10})] + [
        _budget_run("snip", q, 0, 0.9, model="lenet5") for q in (0.9, 0.99)]
    assert [ax.get_title() for ax in figures.plot_gap(results.aggregate(trained + caffe)).axes] \
        == ["lenet300"]
    assert [ax.get_title() for ax in figures.plot_rates(results.aggregate(trained + caffe)).axes] \
        == ["lenet300", "lenet5"]
    with pytest.raises(ValueError, match="no network has a trained dense run"):
        figures.plot_gap(results.aggregate(caffe))
    files = pages.write_report(caffe, tmp_path)["files"]
    assert "rates.png" in files and "gap.png" not in files
    assert not (tmp_path / "gap.png").exists()
    import matplotlib.pyplot as plt
    plt.close("all")
