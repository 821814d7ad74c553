"""Atomic writes on a local disk and on an object store (TF's in-memory ram:// file system,
which like GCS has no atomic rename), and a whole run kept on ram://."""

import json
import os
import uuid

import keras
import pytest
import tensorflow as tf

from tfresnet import evaluate as evaluate_lib
from tfresnet import export, files
from tfresnet import train as train_lib


def _ram(name):
    return f"ram://{uuid.uuid4().hex[:8]}/{name}"


@pytest.mark.parametrize("remote", [False, True])
def test_write_json_is_strict_and_replaces_whole(tmp_path, remote):
    path = _ram("a/b.json") if remote else str(tmp_path / "a" / "b.json")
    files.write_json(path, {"x": float("nan"), "y": [1.5, float("inf")], "z": "ok"})
    assert json.loads(files.read_text(path)) == {"x": None, "y": [1.5, None], "z": "ok"}
    files.write_json(path, {"x": 2})
    assert files.read_json(path) == {"x": 2}
    folder = os.path.dirname(path)
    assert [n for n in tf.io.gfile.listdir(folder) if files.TEMP_MARK in n] == []


@pytest.mark.parametrize("remote", [False, True])
def test_append_line_adds_lines_to_a_file_replaced_whole(tmp_path, remote):
    path = _ram("log.jsonl") if remote else str(tmp_path / "log.jsonl")
    files.append_line(path, '{"n": 1}')
    files.append_line(path, '{"n": 22}')
    assert files.read_text(path) == '{"n": 1}\n{"n": 22}\n'


def test_absolute_keeps_remote_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert files.absolute("ram://b/r") == "ram://b/r" and files.absolute("gs://b/r") == "gs://b/r"
    assert files.absolute("runs/r") == str(tmp_path / "runs" / "r")


def test_a_failed_local_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = str(tmp_path / "f.txt")
    files.write_text(path, "old")

    def dies(target):
        with open(target, "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(path, dies)
    assert files.read_text(path) == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_stale_temps_are_removed(tmp_path):
    (tmp_path / f"{files.TEMP_MARK}1234-model.keras").write_text("x")
    (tmp_path / "keep.txt").write_text("y")
    (tmp_path / "draft.tmp-2.txt").write_text("a user's file: ours all start with the mark")
    assert len(files.remove_stale_temps(str(tmp_path))) == 1
    assert sorted(os.listdir(tmp_path)) == ["draft.tmp-2.txt", "keep.txt"]


def test_models_save_and_load_on_ram():
    from tfresnet import build_model

    model = build_model("cifar_resnet8", input_shape=(8, 8, 1), num_classes=3)
    path = _ram("m/model.keras")
    files.save_model(model, path)
    files.save_weights(model, _ram("m/w.weights.h5"))
    assert keras.saving.load_model(path).count_params() == model.count_params()


@pytest.mark.slow  # a whole run on ram://; test_runlock's object-store test stays
def test_train_evaluate_and_export_on_ram(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a local ./ram:/ folder would show a path taken as local
    run = _ram("runs/r8")
    config = train_lib.TrainConfig(
        model="cifar_resnet8", epochs=2, batch_size=128, run_dir=run, verbose=0, export=True
    )
    results = train_lib.train(config)
    names = {os.path.basename(p.rstrip("/")) for p in tf.io.gfile.listdir(run)}
    assert {"config.json", "results.json", "history.csv", "model.keras", "export"} <= names
    assert "backup" not in names and not os.path.exists(tmp_path / "ram:")
    assert files.read_json(f"{run}/results.json")["curves"]["epoch"] == [1, 2]
    report = evaluate_lib.evaluate(run)
    assert report["top1_error"] == pytest.approx(results["final"]["test_error"], abs=1e-6)
    assert export.model_versions(f"{run}/export/cifar_resnet8") == [1]
    again = export.export_for_serving(
        keras.saving.load_model(f"{run}/model.keras"), _ram("exports"), model_name="r8"
    )
    assert again.endswith("r8/1") and tf.io.gfile.exists(f"{again}/saved_model.pb")
    assert not os.listdir(tmp_path)
