"""`evaluate` refuses data its model cannot take before evaluating anything, with advice that
fits the data set: --image_size only where it resizes, never for channels or a class count."""

import keras
import pytest
from PIL import Image

from tfresnet import build_model, data, evaluate


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{name: .keras path}: a 10-class grey 8x8 model and a 2-class colour one."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, shape, classes in (("grey10", (8, 8, 1), 10), ("colour2", (8, 8, 3), 2)):
        paths[name] = str(folder / f"{name}.keras")
        build_model("cifar_resnet8", input_shape=shape, num_classes=classes).save(paths[name])
    return paths


@pytest.fixture(autouse=True)
def _no_evaluation(monkeypatch):
    def evaluated(*args, **kwargs):
        raise AssertionError("the data should have been refused before evaluating")

    monkeypatch.setattr(keras.Model, "evaluate", evaluated)


def _folder(root, classes, size=8):
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (size, size), 40 * i).save(root / cls / f"{i}.png")
    return str(root)


@pytest.mark.slow  # test_cli_errors' 'evaluate: 12 classes' case checks the message
def test_a_class_count_the_model_does_not_have_is_refused(models, tmp_path):
    twelve = _folder(tmp_path / "twelve", [f"c{i:02d}" for i in range(12)])
    with pytest.raises(data.DataError, match="has 10 outputs \\(classes\\) but .*twelve has 12"):
        evaluate.evaluate(models["grey10"], twelve)


@pytest.mark.slow  # test_cli_errors' 'evaluate: shape mismatch' case checks the advice
def test_image_shapes_get_the_advice_that_fits(models, tmp_path):
    grey = _folder(tmp_path / "grey", ["a", "b"])
    with pytest.raises(data.DataError, match="8x8x3 images but .*8x8x1; the channels differ"):
        evaluate.evaluate(models["colour2"], grey)
    big = _folder(tmp_path / "big", [f"c{i}" for i in range(10)], size=16)
    with pytest.raises(data.DataError, match="big's are 16x16x1; pass --image_size=8, or"):
        evaluate.evaluate(models["grey10"], big)


def test_fashion_mnist_says_its_size_is_fixed(models, tmp_path, monkeypatch):
    from test_idx import write_mnist_folder

    write_mnist_folder(tmp_path / "debian", classes=10, n_train=10, n_test=10, size=28)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    tfds_dir = str(tmp_path / "tfds")
    with pytest.raises(data.DataError, match="fashion_mnist's are 28x28x1, used as stored"):
        evaluate.evaluate(models["grey10"], "fashion_mnist", data_dir=tfds_dir)
    with pytest.raises(
        data.DataError,
        match="--image_size=8 does not apply to fashion_mnist: its images are 28x28x1 as stored"
        ".*; the model takes 8x8x1 images: evaluate it on the data set it was trained on",
    ):
        evaluate.evaluate(models["grey10"], "fashion_mnist", data_dir=tfds_dir, image_size=8)


def test_ten_crop_averages_the_softmax_of_the_ten_views(models, tmp_path, monkeypatch):
    import numpy as np

    from tfresnet import pipeline

    monkeypatch.undo()  # this test evaluates
    folder = _folder(tmp_path / "three", ["a", "b", "c"])
    path = str(tmp_path / "grey3.keras")
    model = build_model("cifar_resnet8", input_shape=(8, 8, 1), num_classes=3)
    model.save(path)
    result = evaluate.evaluate(path, folder, ten_crop=True)
    test = data.load_data(folder).test
    hits = [
        np.argmax(np.mean(model(pipeline.ten_crops(x, (8, 8)), training=False), axis=0)) == y
        for x, y in test.as_numpy_iterator()
    ]
    assert result["examples"] == 3 and result["top1_error"] == pytest.approx(1 - np.mean(hits))
    assert result["top5_error"] is None  # 3 classes: a top 5 says nothing, as for one view
