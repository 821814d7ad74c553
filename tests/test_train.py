import csv
import dataclasses
import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import data as data_lib
from tfresnet import evaluate as evaluate_lib
from tfresnet import files, models, pipeline, rundir
from tfresnet import train as train_lib
from tfresnet.train import TrainConfig, TrainingError


def _config(tmp_path, **kwargs):
    values = dict(
        model="cifar_resnet8",
        dataset="digits",
        epochs=2,
        batch_size=64,
        export=False,
        run_dir=str(tmp_path / "run"),
        verbose=0,
        validation_size=100,
    )
    values.update(kwargs)
    return TrainConfig(**values)


def test_train_writes_a_complete_run_directory(tmp_path):
    config = _config(tmp_path)
    run = tmp_path / "run"

    class Seen(keras.callbacks.Callback):
        """A caller's callback: it sees each epoch end, before the epoch is committed."""

        def __init__(self):
            super().__init__()
            self.committed = []  # epochs in history.csv at each epoch's end

        def on_epoch_end(self, epoch, logs=None):
            self.committed.append(len(rundir.read_history_rows(str(run / "history.csv"))))

    seen = Seen()
    results = train_lib.train(config, callbacks=[seen])
    assert seen.committed == [0, 1]
    for name in (
        "config.json",
        "results.json",
        "history.csv",
        "model.keras",
        "checkpoints/last.keras",
        "checkpoints/best.keras",
    ):
        assert (run / name).is_file(), name
    assert any((run / "logs" / "train").iterdir())
    assert not (run / "backup").exists()  # removed once the run finished
    saved = json.loads((run / "results.json").read_text())
    assert saved["final"] == pytest.approx(results["final"])
    assert saved["config"] == json.loads((run / "config.json").read_text())
    assert saved["curves"]["epoch"] == [1, 2]
    assert len(saved["curves"]["test_error"]) == len(saved["curves"]["val_error"]) == 2
    assert 0.0 <= saved["final"]["test_error"] <= 1.0
    assert saved["final"]["test_error"] < 0.9  # two epochs already beat chance (90% error)
    assert saved["model"]["params"] == 75_290 - 2 * 9 * 16  # cifar_resnet8, 1 input channel
    assert saved["schedule"]["steps_per_epoch"] == 1338 // 64
    assert saved["schedule"]["learning_rate"] == pytest.approx(0.1 * 64 / 128)
    assert saved["train_images_per_s"] > 0 and saved["versions"]["keras"] == keras.__version__
    # The final test error is the test curve's last point, measured on the same weights.
    assert saved["final"]["test_error"] == saved["curves"]["test_error"][-1]
    reloaded = keras.saving.load_model(run / "model.keras")
    assert (
        reloaded.count_params()
        == keras.saving.load_model(run / "checkpoints" / "last.keras").count_params()
    )
    # The decay term is weight_decay / 2 times the squared norm of every conv and dense kernel.
    kernels = [w for w in reloaded.weights if w.path.endswith("kernel")]
    squared = sum(float(np.sum(np.square(keras.ops.convert_to_numpy(w)))) for w in kernels)
    decay = saved["schedule"]["weight_decay"]
    assert saved["curves"]["weight_decay_loss"][-1] == pytest.approx(decay / 2 * squared, rel=1e-5)
    assert 0 < saved["curves"]["weight_decay_loss"][-1] < saved["curves"]["train_loss"][-1]


class _Crash(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() > 25:  # inside epoch 2 of 3
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow  # two trainings; tests/test_rundir.py kills at finer instants
def test_killed_run_resumes_from_its_last_epoch(tmp_path):
    config = _config(tmp_path, epochs=3, validation_size=0)
    train_lib.check_run_dir(config)
    os.makedirs(config.run_dir, exist_ok=True)
    files.write_json(os.path.join(config.run_dir, "config.json"), config.__dict__)
    with pytest.raises(KeyboardInterrupt):
        train_lib.fit_model(config, extra_callbacks=[_Crash()])
    assert (tmp_path / "run" / "backup").exists()
    keras.backend.clear_session()
    # --resume takes the saved settings (3 epochs), whatever the command line says.
    train_lib.train(dataclasses.replace(config, resume=True, epochs=99, verbose=0))
    with open(tmp_path / "run" / "history.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2]  # epoch 0 from the first process, 1-2 after the restart
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 3 * (1438 // 64)


def test_run_directory_guards(tmp_path):
    train_lib.train(_config(tmp_path, epochs=1))
    with pytest.raises(TrainingError, match="holds a finished run"):
        train_lib.train(_config(tmp_path, epochs=1))
    with pytest.raises(TrainingError, match="holds a different run \\(differs in: epochs\\)"):
        train_lib.train(_config(tmp_path, epochs=2))
    with pytest.raises(TrainingError, match="no run to continue"):
        train_lib.train(_config(tmp_path, run_dir=str(tmp_path / "other"), resume=True))
    # Refused before --overwrite deletes: at the plan (input too small), at the build.
    with pytest.raises(ValueError, match="too small"):
        train_lib.train(_config(tmp_path, model="cifar:stage_blocks=1,1,1,1,1", overwrite=True))
    (tmp_path / "not.h5").write_text("not weights")
    with pytest.raises(ValueError, match="pretrained"):  # RGB weights, 1-channel digits
        train_lib.train(_config(tmp_path, pretrained=str(tmp_path / "not.h5"), overwrite=True))
    assert (tmp_path / "run" / "results.json").exists()
    results = train_lib.train(_config(tmp_path, epochs=2, overwrite=True))
    assert results["schedule"]["epochs"] == 2


@pytest.mark.slow  # default-suite time; CI's slow step runs it
def test_overwrite_keeps_the_old_run_when_the_pretrained_file_does_not_fit(tmp_path):
    from PIL import Image

    for cls, value in (("a", 30), ("b", 220)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (value, 40 * i, 255 - value)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    config = _config(
        tmp_path, dataset=str(tmp_path / "imgs"), epochs=1, batch_size=4, validation_size=0
    )
    train_lib.train(config)
    (tmp_path / "wrong.h5").write_text("a ResNet-50's weights, say")
    wrong = dataclasses.replace(config, pretrained=str(tmp_path / "wrong.h5"), overwrite=True)
    with pytest.raises(ValueError, match="blocks per stage; a .h5 file loads only into"):
        train_lib.train(wrong)
    assert sorted(os.listdir(tmp_path / "run")) == [
        "checkpoints", "config.json", "history.csv", "logs", "model.keras", "results.json"
    ]  # fmt: skip


def test_divergence_is_reported_clearly(tmp_path):
    with pytest.raises(TrainingError, match="Training diverged in epoch 1 .*NaN"):
        train_lib.train(_config(tmp_path, learning_rate=1e30, epochs=1, validation_size=0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "float8"}, "Unknown precision 'float8'; allowed: float32"),
        ({"strategy": "horovod"}, "Unknown strategy 'horovod'; allowed: auto"),
        ({"model": "resnet21"}, "6n\\+2"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"resume": True, "overwrite": True}, "at most one of resume and overwrite"),
        ({"learning_rate": -0.1}, "learning_rate must be a number > 0; got -0.1"),
        ({"learning_rate": float("nan")}, "learning_rate must be a number > 0; got nan"),
        ({"weight_decay": float("inf")}, "weight_decay must be a number >= 0; got inf"),
        ({"validation_size": float("nan")}, "validation_size must be a count or a fraction"),
        ({"epochs": 0}, "epochs must be between 1 and 2,147,483,647; got 0"),
        ({"epochs": None, "steps": 2**31}, "steps must be between 1 and 2,147,483,647; got 2147"),
        ({"epochs": None, "budget": 0.0}, "budget must be > 0"),
        ({"steps": 5}, "at most one of budget, epochs and steps"),
    ],
)
def test_bad_config_values_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **kwargs)


def test_a_start_that_ends_before_a_backup_leaves_nothing_in_the_way(tmp_path, monkeypatch):
    """config.json is written before training; a start that ends before an epoch is backed
    up must not make the corrected command a "different run"."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("the user's")  # not ours to remove

    def refused(config, **kwargs):
        assert (tmp_path / "run" / "config.json").exists()
        raise ValueError("a backup from another network")

    monkeypatch.setattr(train_lib, "fit_model", refused)
    with pytest.raises(ValueError, match="another network"):
        train_lib.train(_config(tmp_path, epochs=1))
    assert os.listdir(tmp_path / "run") == ["notes.txt"]  # no config.json
    train_lib.check_run_dir(_config(tmp_path, epochs=2))  # the corrected command is not refused


def test_a_failure_after_the_run_finished_keeps_it(tmp_path, monkeypatch):
    def finishes_then_fails(config, **kwargs):  # e.g. gs:// failing to delete backup/
        (tmp_path / "run" / "results.json").write_text("{}")
        raise OSError("backup/ could not be removed")

    monkeypatch.setattr(train_lib, "fit_model", finishes_then_fails)
    with pytest.raises(OSError):
        train_lib.train(_config(tmp_path, epochs=1))
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "results.json"]


def test_batch_larger_than_the_data_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="batch_size 4096 is larger than the 1338 training"):
        train_lib.train(_config(tmp_path, batch_size=4096))


class _Strategy:
    """A stand-in with what plan_schedule asks of a strategy."""

    def __init__(self, replicas):
        self.num_replicas_in_sync = replicas
        self.extended = None


def _info(train_size):
    return types.SimpleNamespace(
        name="data",
        style="cifar",
        sizes={"train": train_size},
        image_shape=(8, 8, 1),
        flip=False,
    )


@pytest.mark.parametrize(
    "train_size, replicas, wanted, picked",
    [
        (60_000, 1, None, 6),  # Fashion-MNIST at 128: 468 steps = 2^2 * 3^2 * 13
        (1_338, 1, None, 5),  # digits at 64: 20 steps
        (128 * 13, 1, None, 1),  # 13 steps: a prime, one step per call
        (60_000, 2, None, 1),  # mirrored: Keras 3.15 needs 1
        (60_000, 1, 4, 4),
        (60_000, 1, 1, 1),
    ],
)
def test_steps_per_execution_divides_the_epoch(train_size, replicas, wanted, picked):
    config = TrainConfig(model="cifar_resnet8", batch_size=128, epochs=1,
                         steps_per_execution=wanted)  # fmt: skip
    schedule = train_lib.plan_schedule(config, _info(train_size), _Strategy(replicas))
    assert schedule.steps_per_execution == picked
    assert schedule.steps_per_epoch % picked == 0


@pytest.mark.parametrize(
    "replicas, wanted, message",
    [
        (1, 8, r"steps_per_execution=8 does not divide the 468 steps .* one of \[3, 4, 6\]"),
        (2, 4, "steps_per_execution=4 does not work with 2 replicas"),
    ],
)
def test_steps_per_execution_that_cannot_work_is_refused(replicas, wanted, message):
    config = TrainConfig(model="cifar_resnet8", batch_size=128, epochs=1,
                         steps_per_execution=wanted)  # fmt: skip
    with pytest.raises(ValueError, match=message):
        train_lib.plan_schedule(config, _info(60_000), _Strategy(replicas))


def test_steps_per_execution_is_a_speed_setting_a_resume_may_change(tmp_path):
    config = _config(tmp_path, epochs=2, steps_per_execution=2, validation_size=0)
    train_lib.train(dataclasses.replace(config, epochs=1, overwrite=True))
    # Same run (only epochs differ): check_run_dir names only epochs, not steps_per_execution.
    with pytest.raises(TrainingError, match=r"\(differs in: epochs\)"):
        train_lib.check_run_dir(dataclasses.replace(config, steps_per_execution=11))
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 1438 // 64  # no step past the epoch


def test_results_hold_an_unaugmented_inference_pass_over_the_training_images(tmp_path):
    """fit's training error is a running mean over augmented batches in training mode; the
    final pass is what model.evaluate gives on the plain training images (the split trained
    on: the validation images held out), with and without the weight-decay term."""
    results = train_lib.train(_config(tmp_path, epochs=1))
    final = json.loads((tmp_path / "run" / "results.json").read_text())["final"]
    assert final == pytest.approx(results["final"])
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    data = data_lib.load_data("digits", validation_size=100)
    plain = data.train.map(lambda image, label: (tf.cast(image, tf.float32), label)).batch(64)
    manual = model.evaluate(plain, verbose=0, return_dict=True)
    decay = sum(float(loss) for loss in model.losses)
    assert final["train_error_eval"] == pytest.approx(1 - manual["accuracy"], abs=1e-6)
    assert final["train_loss_eval"] == pytest.approx(manual["loss"], rel=1e-5)
    assert final["weight_decay_loss"] == pytest.approx(decay, rel=1e-5) and decay > 0
    assert final["train_cross_entropy_eval"] == pytest.approx(manual["loss"] - decay, rel=1e-5)
    assert final["test_cross_entropy"] == pytest.approx(final["test_loss"] - decay, rel=1e-5)
    assert final["train_error_eval"] != final["train_error"]  # not fit's running figure
    # The padded, augmented images this run trained on give another number.
    augmented = pipeline.make_pipeline(
        data.train, data.info, batch_size=64, training=True, drop_remainder=False
    )
    assert model.evaluate(augmented, verbose=0, return_dict=True)["loss"] != pytest.approx(
        final["train_loss_eval"], rel=1e-3
    )


def test_evaluate_reports_top1_and_top5(tmp_path):
    results = train_lib.train(_config(tmp_path, epochs=1))
    report = evaluate_lib.evaluate(str(tmp_path / "run"))
    assert report["examples"] == 359
    assert report["top1_error"] == pytest.approx(results["final"]["test_error"], abs=1e-6)
    assert 0 <= report["top5_error"] <= report["top1_error"]
    assert report["dataset"] == "digits"  # the run's own data set, from its config.json
    with pytest.raises(ValueError, match="No model at"):
        evaluate_lib.evaluate(str(tmp_path / "nothing"))


@pytest.mark.slow  # builds two ResNet-50s
def test_fine_tune_from_keras_applications_weights(tmp_path):
    """--pretrained builds keras.applications' layout, loads its weights and trains on."""
    import numpy as np
    from PIL import Image
    from test_pretrained import _write_legacy_h5

    from tfresnet import models, pretrained

    for cls, value in (("a", 30), ("b", 220)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (32, 32), (value, i * 20, 255 - value)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    source = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=7)
    weights = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
    path = _write_legacy_h5(weights, tmp_path / "r50.h5")
    config = _config(
        tmp_path,
        model="resnet50",
        dataset=str(tmp_path / "imgs"),
        image_size=32,
        batch_size=4,
        epochs=None,
        steps=1,
        validation_size=0,
        pretrained=path,
        learning_rate=1e-12,
        eval_test_each_epoch=False,
    )
    model, results = train_lib.fit_model(config)
    expected = models.build_model(
        "resnet50",
        num_classes=2,
        input_shape=(32, 32, 3),
        **pretrained.keras_applications_compatible_kwargs(),
    )
    assert results["model"]["params"] == models.count_params(expected)  # 7-class head skipped
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.get_layer("stage4_block3_conv3").kernel),
        weights["conv5_block3_3_conv"][0],
        atol=1e-6,
    )


def test_a_custom_spec_trains_exports_and_reloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directory is runs/<model>-<data> under it
    spec = "resnet8:width_multiplier=2"
    results = train_lib.train(
        _config(tmp_path, model=spec, run_dir=None, epochs=1, export=True, validation_size=0)
    )
    run = results["config"]["run_dir"]
    assert os.path.basename(run) == "resnet8-width_multiplier-2-digits"
    assert results["model"]["params"] > 3 * 75_290  # twice the width: about 4x the weights
    assert os.path.isdir(os.path.join(run, "export", "resnet8-width_multiplier-2", "1"))
    assert rundir.foreign_entries(run) == []  # all ours: --overwrite may replace it
    reloaded = keras.saving.load_model(os.path.join(run, "model.keras"), safe_mode=True)
    assert models.count_params(reloaded) == results["model"]["params"]


def test_fit_model_leaves_the_process_as_it_found_it(tmp_path):
    import sys

    limit = sys.getrecursionlimit()
    train_lib.train(_config(tmp_path, precision="mixed_bfloat16", epochs=1, validation_size=0))
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not train_lib.rundir.IN_TRAINING.is_set()  # a SIGTERM now stops the process itself
    model = models.build_model("resnet56")  # 50 x 56 frames while building, then restored
    assert model.get_layer("stem_conv").compute_dtype == "float32"
    assert sys.getrecursionlimit() == limit


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist"),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)
def test_one_epoch_of_fashion_mnist_is_under_20_percent_test_error(tmp_path):
    """The README's promise for `tfresnet train --dataset=fashion_mnist --epochs=1`."""
    results = train_lib.train(
        TrainConfig(
            dataset="fashion_mnist",
            epochs=1,
            export=False,
            verbose=0,
            run_dir=str(tmp_path / "run"),
        )  # fmt: skip
    )
    assert results["data"]["sizes"] == {"train": 60_000, "validation": 0, "test": 10_000}
    assert results["final"]["test_error"] < 0.20


def test_overwrite_refuses_files_no_run_wrote_and_a_run_in_training(tmp_path, capsys):
    """--overwrite deletes a run's own files only: a folder of the user's (a thesis) or a run
    holding a file of theirs is refused whole (exit 2), and so is a run in training (138)."""
    from test_rundir import tree_of
    from test_runlock import held_by_another_process

    from tfresnet import cli

    def overwrite(folder):
        argv = ["train", "--model=cifar_resnet8", "--noexport", "--verbose=0", "--steps=1"]
        status = cli.main(["tfresnet", *argv, "--overwrite", f"--run_dir={folder}"])
        return status, capsys.readouterr().err

    thesis = tmp_path / "thesis"
    (thesis / "figures").mkdir(parents=True)
    (thesis / "chapter1.tex").write_text("four years of work")
    (thesis / "figures" / "fig1.pdf").write_text("%PDF")
    status, err = overwrite(thesis)
    assert status == 2 and err.count("\n") == 1, err
    assert f"{str(thesis)!r} holds files that no tfresnet run wrote (chapter1.tex, figures/)" in err
    assert "Nothing was removed" in err
    assert tree_of(thesis) == {"chapter1.tex": b"four years of work", "figures/fig1.pdf": b"%PDF"}

    run = tmp_path / "run"  # a finished run, and a file of the user's inside its checkpoints/
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "results.json", "checkpoints/last.keras", "checkpoints/mine.txt"):
        (run / name).write_text("{}")
    before = tree_of(run)
    status, err = overwrite(run)
    assert status == 2 and "(checkpoints/mine.txt)" in err, err
    assert tree_of(run) == before
    (run / "checkpoints" / "mine.txt").unlink()
    before = tree_of(run)
    with held_by_another_process(run):  # a trainer in it: refused before anything else
        status, err = overwrite(run)
    assert status == 138 and "in use: another process is training" in err, err
    assert tree_of(run) == before
