"""The pipeline end to end: frozen weights survive training bit for bit, the CLI, the smoke test."""

import json
from dataclasses import replace

import numpy as np
import pytest

from minifreeze import storage
from minifreeze.lab.cli import main
from minifreeze.data import limit_train, load_dataset
from minifreeze.train import TrainConfig, TrainingDiverged, plan_epochs, prepare, train


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def small(mnist):
    return replace(limit_train(mnist, 300), x_test=mnist.x_test[:200], y_test=mnist.y_test[:200])


@pytest.mark.parametrize("method", ["freezenet", "snip"])
def test_after_training_frozen_equal_theta0_and_pruned_are_zero(small, method, tmp_path):
    config = TrainConfig(model="lenet300", method=method, rate=0.9, epochs=2, seed=11, lr=0.05)
    result = train(config, small, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    changed = 0
    for name, m in result.masks.items():
        off, theta, theta0 = m == 0, result.params[name], result.theta0[name]
        if method == "freezenet":
            assert np.array_equal(theta[off].view(np.uint32), theta0[off].view(np.uint32))
        else:
            assert (theta[off] == 0).all()
        changed += int((theta[~off] != theta0[~off]).sum())
    assert changed > 0.9 * sum(int(m.sum()) for m in result.masks.values())
    path = tmp_path / "m.mfz"
    storage.save(path, result.checkpoint())
    back = storage.load(path)
    x = small.x_test[:50]
    assert np.array_equal(result.model.predict(result.params, x),
                          back.model().predict(back.params, x))


def test_same_mask_frozen_or_pruned_is_one_field_away(small):
    a = prepare(TrainConfig(model="lenet300", method="freezenet", rate=0.95, seed=3), small)
    b = prepare(TrainConfig(model="lenet300", method="freezenet", mode="prune", rate=0.95, seed=3),
                small)
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k])
        assert (b.params[k][a.masks[k] == 0] == 0).all()
        assert np.array_equal(a.params[k], a.theta0[k])


def test_divergence_names_epoch_and_step_and_keeps_last_good(small):
    config = TrainConfig(model="lenet300", method="dense", epochs=1, lr=1e6, seed=0,
                         warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+") as info:
        train(config, small, progress=False)
    assert info.value.step >= 1
    assert all(np.isfinite(v).all() for v in info.value.params.values())


def test_plan_epochs_fits_the_budget(small):
    plan = plan_epochs(TrainConfig(model="lenet300", method="dense"), small, 1e4, probe_steps=2)
    assert plan["epochs"] >= 1 and plan["step_seconds"] > 0
    tiny = plan_epochs(TrainConfig(model="lenet300", method="dense"), small, 1e-3, probe_steps=2)
    assert tiny["epochs"] == 1


def test_cli_train_evaluate_inspect(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet300", "--method", "freezenet", "--rate", "0.99",
                 "--epochs", "1", "--seed", "4", "--limit-train", "200", "--out", str(out),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "total_params", "trained_params", "compression", "file_bytes",
                "dense_bytes", "wall_seconds", "history"):
        assert key in metrics
    assert printed["file_bytes"] == (out / "model.mfz").stat().st_size
    assert metrics["dense_bytes"] == 4 * 266_610
    assert main(["evaluate", str(out / "model.mfz"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    assert main(["inspect", str(out / "model.mfz")]) == 0
    text = capsys.readouterr().out
    assert "fc1.w" in text and "on disk" in text
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "accuracy.png").is_file() and (tmp_path / "results.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "lenet5", "--method", "freezenet", "--rate", "1", "--out", "x"],
     "rate: expected a number in [0, 1), got 1.0"),
    (["train", "--model", "resnet", "--method", "freezenet", "--out", "x"], "invalid choice"),
    (["train", "--model", "lenet5", "--method", "lottery", "--out", "x"], "invalid choice"),
    (["train", "--model", "lenet5", "--method", "dense", "--epochs", "auto", "--out", "x"],
     "--epochs auto needs --budget"),
    (["evaluate", "missing.mfz"], "missing.mfz: file not found"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_corrupt_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.mfz"
    bad.write_bytes(b"MFZ\0" + bytes(64))
    assert main(["inspect", str(bad)]) == 2
    assert "bad.mfz" in capsys.readouterr().err


def test_smoke_dense_lenet5_three_epochs_on_2000_images(mnist):
    """The issue's accuracy floor: > 90% on the 10,000 test images (a re-implementation: 92%)."""
    # batch 32 (189 steps): with batch 100 (60 steps) lr 0.05 reaches about 90.3%, too close
    config = TrainConfig(model="lenet5", method="dense", epochs=3, seed=0, batch_size=32, lr=0.02,
                         warmup_steps=0)
    result = train(config, limit_train(mnist, 2000), progress=False)
    assert result.history[-1]["test_accuracy"] > 0.90


def test_on_step_sees_every_update_and_masked_gradients(small):
    from minifreeze.train import gradient_norms
    config = TrainConfig(model="lenet300", method="freezenet", rate=0.9, epochs=1, seed=5,
                         batch_size=100)
    seen = []

    def record(t, loss, grads):
        seen.append((t, loss, gradient_norms(grads, ["fc1.w"])))
        assert not grads["fc1.w"][result_masks["fc1.w"] == 0].any()  # frozen: zero gradient

    result_masks = prepare(config, small).masks
    train(config, small, progress=False, on_step=record)
    assert [t for t, _, _ in seen] == [1, 2, 3]  # 300 examples, batch 100
    assert all(np.isfinite(loss) and norms["fc1.w"] > 0 for _, loss, norms in seen)
    g = {"a.w": np.array([3.0, 4.0], np.float32), "b.w": np.zeros((2, 2), np.float32)}
    assert gradient_norms(g) == {"a.w": 5.0, "b.w": 0.0}


def test_cli_unwritable_out_is_one_line_before_any_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = main(["train", "--model", "lenet300", "--method", "dense", "--epochs", "1",
                   "--limit-train", "100", "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"--out {blocker / 'run'}: cannot write there" in err


def test_cli_diverged_run_keeps_last_good_and_says_where(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", "--model", "lenet300", "--method", "freezenet", "--rate", "0.9",
                   "--epochs", "1", "--lr", "1e6", "--warmup-steps", "0", "--limit-train", "300",
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "training diverged" in err
    assert "last_good.mfz" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diverged"]["epoch"] == 1 and metrics["diverged"]["step"] >= 1
    assert "test_accuracy" not in metrics
    back = storage.load(out / "last_good.mfz")
    assert all(np.isfinite(v).all() for v in back.params.values())
    theta0 = prepare(TrainConfig(model="lenet300", method="freezenet", rate=0.9, seed=0),
                     limit_train(load_dataset("mnist"), 300))
    for k, m in back.masks.items():  # still a FreezeNet: frozen entries are theta0
        assert np.array_equal(back.params[k][m == 0], theta0.theta0[k][m == 0])
    assert sorted(p.name for p in out.iterdir()) == ["last_good.mfz", "metrics.json"]


def test_a_config_is_resolved_once_unless_it_changes():
    """`resolved()` does its work once per run: the copy it returns is returned as it is by
    later calls, until a field changes; the marker is not a field (asdict, replace drop it)."""
    import dataclasses
    c = TrainConfig(model="lenet5", method="snip", rate=0.99,
                    model_kwargs={"conv_relu": True}).resolved()
    assert c.resolved() is c
    c.model_kwargs["conv_relu"] = False  # a field's contents changed: resolved again
    again = c.resolved()
    assert again is not c and again.model_kwargs == {}
    assert "_resolved_as" not in dataclasses.asdict(again)
    moved = dataclasses.replace(again, epochs=3)
    assert moved.resolved() is not moved and moved.resolved() == moved
