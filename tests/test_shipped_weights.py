"""Weights that ship: a tiny run packaged by experiments/ship_weights into a temporary weights
folder loads through build_model(weights=), `tfresnet predict` and `tfresnet export` with the
run's outputs; damaged files, other architectures and unknown names are refused. The slow test
checks the real shipped ResNet-20's stated Fashion-MNIST test accuracy."""

import contextlib
import io
import json
import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image
from repo_files import repo_file

from experiments import ship_weights
from tfresnet import cli, files
from tfresnet import data as data_lib
from tfresnet import shipped as shipped_lib
from tfresnet.models import build_model

MODEL = "cifar_resnet8"


def _quiet(argv):
    """(exit status, stdout, stderr) of `tfresnet argv...` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["tfresnet", *argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A 2-step digits run (with a validation split) packaged as weights "digits"."""
    tmp = tmp_path_factory.mktemp("shipped")
    run = str(tmp / "run")
    status, _, err = _quiet(
        [
            "train",
            f"--model={MODEL}",
            "--steps=2",
            "--noexport",
            "--verbose=0",
            "--validation_size=100",
            f"--run_dir={run}",
        ]  # fmt: skip
    )
    assert status == 0, err
    weights_dir = str(tmp / "weights")
    description = ship_weights.ship(run, "digits", weights_dir)
    image = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(image).save(tmp / "a.png")
    return {
        "run": run,
        "dir": weights_dir,
        "description": description,
        "image": str(tmp / "a.png"),
        "pixels": image[None, :, :, None].astype("float32"),
        "tmp": tmp,
    }


def _images(shape=(4, 8, 8, 1)):
    return np.random.default_rng(0).uniform(0, 255, shape).astype("float32")


def test_packaged_files_describe_the_run(shipped):
    description, folder = shipped["description"], shipped["dir"]
    stem = f"{MODEL}-digits"
    assert sorted(os.listdir(folder)) == [f"{stem}.json", f"{stem}.weights.h5"]  # no temp files
    assert description == files.read_json(os.path.join(folder, f"{stem}.json"))
    weights_file = os.path.join(folder, f"{stem}.weights.h5")
    assert description["sha256"] == shipped_lib.sha256_of(weights_file)
    results = files.read_json(os.path.join(shipped["run"], "results.json"))
    assert description["test_accuracy"] == pytest.approx(1 - results["final"]["test_error"])
    assert description["val_accuracy"] == pytest.approx(1 - results["final"]["val_error"])
    assert description["config"] == results["config"]
    assert description["class_names"] == [str(i) for i in range(10)]
    assert description["command"] == (
        f"tfresnet train --model={MODEL} --dataset=digits --validation_size=100 --steps=2 "
        "--noexport"
    )
    arguments = description["arguments"]
    assert arguments["num_classes"] == 10 and arguments["input_shape"] == [8, 8, 1]
    assert np.shape(arguments["pixel_mean"]) == (8, 8, 1)  # the run's per-pixel means


def test_build_model_with_weights_gives_the_runs_outputs_and_accuracy(shipped):
    model = build_model(MODEL, weights="digits", weights_dir=shipped["dir"])
    source = keras.saving.load_model(os.path.join(shipped["run"], "model.keras"))
    images = _images()
    np.testing.assert_allclose(model(images), source(images), atol=1e-6)
    correct, total = _correct(model, data_lib.load_data("digits").test)
    assert correct / total == pytest.approx(shipped["description"]["test_accuracy"], abs=1e-6)


def test_headless_loads_all_but_the_classifier_by_name(shipped):
    features = build_model(MODEL, weights="digits", weights_dir=shipped["dir"], include_top=False)
    whole = build_model(MODEL, weights="digits", weights_dir=shipped["dir"])
    assert features.input_shape == (None, 8, 8, 1)
    for layer in features.layers:
        for got, want in zip(layer.get_weights(), whole.get_layer(layer.name).get_weights(),
                             strict=True):  # fmt: skip
            np.testing.assert_array_equal(got, want)
    assert len(features.get_weights()) == len(whole.get_weights()) - 2  # all but the logits
    # The run's per-pixel means fit its own image size only.
    with pytest.raises(ValueError, match=r"got input_shape=\(16, 16, 1\) \(the weights standardise"
                       r" each pixel of 8x8 images\)"):  # fmt: skip
        build_model(MODEL, weights="digits", weights_dir=shipped["dir"], include_top=False,
                    input_shape=(16, 16, 1))  # fmt: skip


def test_weights_file_path_loads(shipped):
    path = os.path.join(shipped["dir"], f"{MODEL}-digits.weights.h5")
    whole = build_model(MODEL, weights="digits", weights_dir=shipped["dir"])
    arguments = shipped_lib.find_shipped(MODEL, "digits", shipped["dir"]).arguments
    model = build_model(MODEL, weights=path, **arguments)
    np.testing.assert_array_equal(model(_images()), whole(_images()))


def test_checksum_mismatch_is_refused(shipped, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(shipped["dir"], folder)
    weights_file = folder / f"{MODEL}-digits.weights.h5"
    data = bytearray(weights_file.read_bytes())
    data[-100] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"has sha256 [0-9a-f]{64}, but its description says"):
        build_model(MODEL, weights="digits", weights_dir=str(folder))


def test_other_architectures_are_refused_in_one_line(shipped):
    with pytest.raises(ValueError) as raised:
        build_model(MODEL, weights="digits", weights_dir=shipped["dir"], num_classes=5)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"weights='digits' are for {MODEL} with num_classes=10, input_shape=(8, 8, 1), "
        "shortcut='A', preact=False"
    )
    assert "got num_classes=5" in message
    with pytest.raises(ValueError, match=r"got input_shape=\(16, 16, 1\), shortcut='B'"):
        build_model(MODEL, weights="digits", weights_dir=shipped["dir"],
                    input_shape=(16, 16, 1), shortcut="B")  # fmt: skip
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8, 3\) \(the weights take 1 chan"):
        build_model(MODEL, weights="digits", weights_dir=shipped["dir"], include_top=False,
                    input_shape=(8, 8, 3))  # fmt: skip


def test_unknown_name_lists_what_is_shipped(shipped):
    with pytest.raises(ValueError, match=rf"No shipped weights 'cifar10' for {MODEL}; shipped: "
                       rf"{MODEL} weights='digits' \(or give a path"):  # fmt: skip
        build_model(MODEL, weights="cifar10", weights_dir=shipped["dir"])
    with pytest.raises(ValueError, match="No shipped weights 'digits' for resnet20; shipped: "):
        build_model("resnet20", weights="digits", weights_dir=shipped["dir"])


def test_unfinished_run_is_refused(shipped, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(shipped["run"], run)
    os.remove(run / "results.json")
    with pytest.raises(ValueError, match="has no results.json: the run has not finished"):
        ship_weights.ship(str(run), "digits", str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_predict_cli_with_weights_prints_the_models_classes(shipped):
    status, out, err = _quiet(
        [
            "predict",
            f"--model={MODEL}",
            "--weights=digits",
            f"--weights_dir={shipped['dir']}",
            "--json",
            "--top_k=3",
            shipped["image"],
        ]  # fmt: skip
    )
    assert status == 0, err
    (result,) = json.loads(out)
    model = build_model(MODEL, weights="digits", weights_dir=shipped["dir"])
    probabilities = np.asarray(model(shipped["pixels"]))[0]
    assert result["classes"] == list(np.argsort(-probabilities)[:3])
    assert result["names"] == [str(c) for c in result["classes"]]
    np.testing.assert_allclose(result["scores"], np.sort(probabilities)[::-1][:3], rtol=1e-4)


def test_export_cli_with_weights_serves_the_model_with_its_class_names(shipped, tmp_path):
    import tensorflow as tf

    status, out, err = _quiet(
        [
            "export",
            f"--model={MODEL}",
            "--weights=digits",
            f"--weights_dir={shipped['dir']}",
            f"--export_dir={tmp_path}/e",
            "--nowarmup",
        ]  # fmt: skip
    )
    assert status == 0, err
    version = out.strip()
    assert version == str(tmp_path / "e" / MODEL / "1")
    names = (tmp_path / "e" / MODEL / "1" / "assets.extra" / "class_names.txt").read_text()
    assert names.splitlines() == shipped["description"]["class_names"]
    served = tf.saved_model.load(version).signatures["serving_default"]
    pixels = shipped["pixels"]
    outputs = served(images=tf.constant(pixels.astype("uint8")))
    model = build_model(MODEL, weights="digits", weights_dir=shipped["dir"])
    np.testing.assert_allclose(outputs["probabilities"], model(pixels), atol=1e-5)


def _shipped_in_package():
    return shipped_lib.shipped_weights()


def test_docs_carry_each_shipped_weights_line():
    shipped = _shipped_in_package()
    if not shipped:
        pytest.skip("no weights in tfresnet/weights/ yet (python -m experiments.ship_weights)")
    page = repo_file("docs/models.md").read_text()
    for entry in shipped.values():
        assert ship_weights.docs_line(entry.description) in page


@pytest.mark.slow  # 10,000 Fashion-MNIST test images through ResNet-20 (twice with test_flip)
def test_shipped_resnet20_fashion_mnist_has_its_stated_test_accuracy():
    entry = _shipped_in_package().get(("resnet20", "fashion_mnist"))
    if entry is None:
        pytest.skip(
            "tfresnet/weights/resnet20-fashion_mnist.* is not shipped yet: package a finished "
            "run with python -m experiments.ship_weights --run_dir=RUN --name=fashion_mnist"
        )
    if not os.path.isdir(data_lib.DEBIAN_FASHION_MNIST):
        pytest.skip(f"no Fashion-MNIST in {data_lib.DEBIAN_FASHION_MNIST} (dataset-fashion-mnist)")
    model = build_model("resnet20", weights="fashion_mnist")
    test = data_lib.load_data("fashion_mnist").test
    correct, total = _correct(model, test, flip=entry.description["evaluation"]["test_flip"])
    assert total == entry.description["test_examples"] == 10_000
    assert 100 * correct / total == pytest.approx(100 * entry.description["test_accuracy"], abs=0.1)


def _correct(model, dataset, flip=False):
    """(correctly classified, examples) of unbatched (image, label) pairs; `flip`: by the mean of
    each image's probabilities and its mirror image's (the fast recipe's test_flip)."""
    correct = total = 0
    for images, labels in dataset.batch(500):
        images = keras.ops.cast(images, "float32")
        probabilities = np.asarray(model(images, training=False))
        if flip:
            mirrored = np.asarray(model(keras.ops.flip(images, axis=2), training=False))
            probabilities = (probabilities + mirrored) / 2
        correct += int((probabilities.argmax(-1) == np.asarray(labels)).sum())
        total += len(labels)
    return correct, total


def test_the_retrain_command_names_a_length_the_recipe_left_to_its_default():
    """A run that took its recipe's length retrains to that length even after the default
    changes; a length the run set is said once, as it was set."""
    config = {"model": "resnet20", "dataset": "fashion_mnist", "recipe": "fast", "epochs": None}
    assert ship_weights.retrain_command(config, 8).endswith("--recipe=fast --epochs=8")
    config["epochs"] = 5
    assert ship_weights.retrain_command(config, 5).count("--epochs") == 1
