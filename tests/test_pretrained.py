"""Transplanted keras.applications weights give the same outputs; mismatches name the layer.

ResNet-50s are the expensive part here, so one source and three targets are built per module
and variants (no-top files, shallower or deeper sources) are written as legacy .h5 files, in the
layout of keras.applications' downloads or by Keras' own `model.save`.
"""

import h5py
import keras
import numpy as np
import pytest

from tfresnet.models import backbone, build_model
from tfresnet.pretrained import (
    CAFFE_MEAN_RGB,
    _target_name,
    keras_applications_compatible_kwargs,
    load_keras_application,
    load_pretrained,
)

SHAPE = (64, 64, 3)


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics: fresh BN layers are the identity and would hide mistakes."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.05, 1.5, variance.shape),
                ]
            )
    return model


def _compatible(raw_pixels=False, **overrides):
    return {**keras_applications_compatible_kwargs(raw_pixels=raw_pixels), **overrides}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _features(model, layer_name):
    return keras.Model(model.input, model.get_layer(layer_name).output)


def _assert_close_to_scale(actual, expected, tolerance=2e-5):
    """Float32 features reach ~1e4 here; compare errors to that scale, not element by element."""
    assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()


def _weights(model):
    """{layer name: arrays} of every layer with weights, in layer order."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def _assert_weights_arrived(target, weights, rgb_stem=False):
    """Every source layer's arrays sit, unchanged, in the tfresnet layer it maps to."""
    for name, arrays in weights.items():
        if rgb_stem and name == "conv1_conv":
            arrays = [arrays[0][:, :, ::-1, :], *arrays[1:]]  # BGR -> RGB input channels
        mine = target.get_layer(_target_name(name)).get_weights()
        assert len(mine) == len(arrays), name
        for a, b in zip(mine, arrays, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def _write_legacy_h5(weights, path, chunks=1):
    """{layer: arrays} in the layout of keras.applications' downloads (Keras 2 save_weights).

    `chunks` > 1 splits `layer_names` into `layer_names0`, `layer_names1`, ... as Keras does
    when the list outgrows an HDF5 object header (deep models such as ResNet152).
    """
    with h5py.File(path, "w") as f:
        names = [name.encode() for name in weights]
        if chunks == 1:
            f.attrs["layer_names"] = names
        for i, part in enumerate(np.array_split(np.array(names), chunks) if chunks > 1 else []):
            f.attrs[f"layer_names{i}"] = part
        for layer_name, arrays in weights.items():
            names = [f"{layer_name}/w{i}:0" for i in range(len(arrays))]
            f.create_group(layer_name).attrs["weight_names"] = [n.encode() for n in names]
            for name, value in zip(names, arrays, strict=True):
                f[layer_name].create_dataset(name, data=value)
    return str(path)


@pytest.fixture(scope="module")
def source():
    """keras.applications ResNet50, randomly initialised (no download), 10 classes."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=SHAPE, classes=10)
    return _randomise_bn(model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 255, (2, *SHAPE)).astype("float32")


@pytest.fixture(scope="module")
def target():
    """tfresnet ResNet-50 in keras.applications' layout, taking the same input."""
    return build_model("resnet50", input_shape=SHAPE, num_classes=10, **_compatible())


@pytest.fixture(scope="module")
def raw_target():
    """Raw-RGB-pixel input and a new 5-class head: the fine-tuning set-up."""
    kwargs = _compatible(raw_pixels=True)
    return build_model("resnet50", input_shape=SHAPE, num_classes=5, **kwargs)


def test_transplanted_resnet50_equals_keras_applications(source, target, images):
    report = load_pretrained(target, source)
    assert report.skipped == {}
    assert not report.rgb_stem
    assert report.loaded[:3] == ("stem_conv", "stem_bn", "stage1_block1_conv1")
    assert len(report.loaded) == 107  # 53 convs + 53 BNs + the classifier
    expected = _numpy(source(images, training=False))
    np.testing.assert_allclose(_numpy(target(images, training=False)), expected, atol=2e-6)
    # BN momentum is 0.9 here and 0.99 there: it only drives training updates, not inference.
    assert target.get_layer("stem_bn").momentum != source.get_layer("conv1_bn").momentum


def test_paper_bn_epsilon_is_accepted_and_changes_nothing_visible(source, target, images):
    """1e-5 instead of 1.001e-5 moves outputs by ~1e-8, even with moving variances of 0.05."""
    layers = [
        layer for layer in target.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.epsilon = 1e-5
    try:
        load_pretrained(target, source)
        expected = _numpy(source(images, training=False))
        np.testing.assert_allclose(_numpy(target(images, training=False)), expected, atol=2e-6)
    finally:
        for layer in layers:
            layer.epsilon = 1.001e-5


@pytest.mark.slow  # keras.applications' ResNet50
def test_raw_pixel_model_equals_keras_applications_after_preprocess_input(
    source, raw_target, images
):
    report = load_pretrained(raw_target, source)
    assert report.rgb_stem
    preprocessed = keras.applications.resnet.preprocess_input(images.copy())
    expected = _numpy(_features(source, "avg_pool")(preprocessed))
    actual = _numpy(_features(raw_target, "avg_pool")(images))
    _assert_close_to_scale(actual, expected)


def test_other_num_classes_skips_or_refuses_the_head(source, raw_target):
    report = load_pretrained(raw_target, source)
    assert report.skipped == {
        "logits": "classifier weight shapes [(2048, 5), (5,)] != source [(2048, 10), (10,)]"
    }
    with pytest.raises(ValueError, match=r"Layer logits: classifier weight shapes .*fine-tuning"):
        load_pretrained(raw_target, source, skip_mismatched_head=False)


@pytest.mark.slow  # keras.applications' ResNet50; the transplant test stays
def test_notop_h5_file_loads_everything_but_the_head(tmp_path, source, raw_target, images):
    weights = _weights(source)
    del weights["predictions"]  # what resnet50_..._notop.h5 holds
    path = _write_legacy_h5(weights, tmp_path / "notop.h5", chunks=3)
    application = load_keras_application(path, raw_target)
    assert application.name == "resnet50" and "predictions" not in _weights(application)
    for name, arrays in _weights(application).items():
        for a, b in zip(arrays, weights[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    raw_target.get_layer("logits").set_weights([np.ones((2048, 5)), np.zeros(5)])
    report = load_pretrained(raw_target, path)
    assert report.skipped == {"logits": "source has no classifier (include_top=False)"}
    assert report.rgb_stem and len(report.loaded) == 106
    _assert_weights_arrived(raw_target, weights, rgb_stem=True)
    np.testing.assert_array_equal(raw_target.get_layer("logits").get_weights()[0], 1.0)
    preprocessed = keras.applications.resnet.preprocess_input(images.copy())
    expected = _numpy(_features(source, "avg_pool")(preprocessed))
    actual = _numpy(_features(raw_target, "avg_pool")(images))
    _assert_close_to_scale(actual, expected)


@pytest.mark.slow  # keras.applications' ResNet50
def test_h5_model_saved_by_keras_gives_keras_applications_logits(tmp_path, source, images):
    """A whole model in Keras' legacy .h5 format (`model.save`), head of 10 classes included."""
    path = str(tmp_path / "resnet50.h5")
    source.save(path)
    model = build_model("resnet50", input_shape=SHAPE, num_classes=10, **_compatible())
    report = load_pretrained(model, path)
    assert report.skipped == {} and len(report.loaded) == 107
    _assert_weights_arrived(model, _weights(source))
    expected = _numpy(source(images, training=False))
    np.testing.assert_allclose(_numpy(model(images, training=False)), expected, atol=2e-6)


@pytest.mark.slow  # two ResNet-50s
def test_imagenet_head_file_is_read_for_a_model_of_other_classes(tmp_path, source, raw_target):
    """The 1000-class download into a 5-class model (or a backbone): its head is read, then
    skipped."""
    rng = np.random.default_rng(2)
    weights = _weights(source)
    weights["predictions"] = [rng.normal(size=(2048, 1000)), rng.normal(size=1000)]
    path = _write_legacy_h5(weights, tmp_path / "imagenet.h5")
    application = load_keras_application(path, raw_target)
    kernel, bias = application.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(kernel, weights["predictions"][0].astype("float32"))
    report = load_pretrained(raw_target, path)
    assert report.skipped == {
        "logits": "classifier weight shapes [(2048, 5), (5,)] != source [(2048, 1000), (1000,)]"
    }
    del weights["predictions"]
    _assert_weights_arrived(raw_target, weights, rgb_stem=True)

    headless = backbone("resnet50", input_shape=SHAPE, **_compatible())
    assert load_keras_application(path, headless).get_layer("predictions").units == 1000


@pytest.mark.slow  # ResNet-50s; test_backbone loads by name
def test_headless_target_and_backbone_take_all_but_the_classifier(source, images):
    headless = build_model("resnet50", input_shape=SHAPE, include_top=False, **_compatible())
    report = load_pretrained(headless, source)
    assert len(report.loaded) == 106 and report.skipped == {}
    expected = _numpy(_features(source, "conv5_block3_out")(images))
    _assert_close_to_scale(_numpy(headless(images)), expected)
    stages = backbone("resnet50", input_shape=SHAPE, **_compatible())
    assert len(load_pretrained(stages, source).loaded) == 106
    expected = _numpy(_features(source, "conv3_block4_out")(images))
    _assert_close_to_scale(_numpy(stages(images)["stage2"]), expected)


@pytest.mark.slow  # two ResNet-50s
def test_v1_5_strides_are_refused_naming_the_first_strided_conv(source):
    model = build_model("resnet50", input_shape=SHAPE, **_compatible(stride_placement="v1.5"))
    before = model.get_layer("stem_conv").get_weights()[0]
    with pytest.raises(
        ValueError,
        match=r"Layer stage2_block1_conv1 \(from conv3_block1_1_conv\): strides \(1, 1\), "
        r"keras.applications uses \(2, 2\) \(build with stride_placement='v1'\)",
    ):
        load_pretrained(model, source)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], before)


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("resnet18", {"conv_bias": False}, r"Layer stem_conv \(from conv1_conv\).*conv_bias=True"),
        ("resnet18", {"bn_epsilon": 1e-3}, r"Layer stem_bn \(from conv1_bn\): BN epsilon 0.001"),
        ("resnet18", {}, r"Layer stage1_block1_conv1 \(from conv2_block1_1_conv\): weight shapes"),
        ("resnet18", {"pixel_mean": 0.5, "pixel_std": 0.25}, "expect caffe preprocessing"),
        ("cifar_resnet8", {}, r"Layer stem_conv \(from conv1_conv\): weight shapes"),
    ],
)
def test_layout_mismatch_names_the_first_layer_that_differs(source, name, overrides, message):
    model = build_model(name, input_shape=(32, 32, 3), **_compatible(**overrides))
    with pytest.raises(ValueError, match=message):
        load_pretrained(model, source)


def test_wrong_files_are_refused_saying_why(tmp_path, source, target):
    weights = _weights(source)
    before = target.get_layer("stem_conv").get_weights()[0]
    shallower = {k: v for k, v in weights.items() if not k.startswith("conv4_block6")}
    with pytest.raises(
        ValueError,
        match=r"shallow.h5 does not hold keras.applications ResNet50 weights \(the depth of "
        r"resnet50\) with a 10-class top: Layer count mismatch .*expected 107 layers, found 101",
    ):
        load_pretrained(target, _write_legacy_h5(shallower, tmp_path / "shallow.h5"))
    deeper = {**weights, "conv4_block7_1_conv": weights["conv4_block6_1_conv"]}  # ResNet101-like
    with pytest.raises(ValueError, match="found 108 saved layers"):
        load_pretrained(target, _write_legacy_h5(deeper, tmp_path / "deeper.h5"))
    del shallower["predictions"]
    with pytest.raises(ValueError, match="with no top: Layer count mismatch .* found 100 saved"):
        load_pretrained(target, _write_legacy_h5(shallower, tmp_path / "notop-shallow.h5"))
    np.testing.assert_array_equal(target.get_layer("stem_conv").get_weights()[0], before)
    resnet18 = build_model("resnet18", input_shape=SHAPE, **_compatible())
    with pytest.raises(ValueError, match=r"resnet18 has \(2, 2, 2, 2\) blocks per stage"):
        load_pretrained(resnet18, tmp_path / "shallow.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(ValueError, match="text.h5 is not a readable HDF5 file"):
        load_pretrained(target, tmp_path / "text.h5")
    with pytest.raises(ValueError, match=r"Weights file .*missing.h5 does not exist"):
        load_pretrained(target, tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="Keras 3 .weights.h5 file"):
        load_pretrained(target, str(tmp_path / "model.weights.h5"))
    with pytest.raises(ValueError, match="must be a keras.applications ResNet model or a path"):
        load_pretrained(target, 42)


def test_compatible_kwargs_build_keras_applications_layers(source, target):
    """Layer by layer, the compatible layout has keras.applications' strides, conv biases,
    BN epsilons and projection shortcuts (a wrong kwarg shows up as a differing layer)."""
    compared = 0
    for layer in source.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.BatchNormalization):
            continue
        mine = target.get_layer(_target_name(layer.name))
        if isinstance(layer, keras.layers.Conv2D):
            assert (mine.strides, mine.use_bias) == (layer.strides, layer.use_bias), layer.name
            assert mine.kernel.shape == layer.kernel.shape, layer.name
        else:
            assert mine.epsilon == pytest.approx(layer.epsilon, rel=1e-6), layer.name
        compared += 1
    assert compared == 2 * 53  # every conv and BN of ResNet-50: stem, 16 blocks x 3, 4 shortcuts
    raw = keras_applications_compatible_kwargs()
    assert raw["pixel_mean"] == CAFFE_MEAN_RGB and raw["pixel_std"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("depth", [101, 152])
def test_deeper_keras_applications_resnets_transplant(depth):
    shape = (32, 32, 3)
    keras.utils.set_random_seed(0)
    application = getattr(keras.applications, f"ResNet{depth}")
    source = _randomise_bn(application(weights=None, input_shape=shape, classes=7))
    model = build_model(f"resnet{depth}", input_shape=shape, num_classes=7, **_compatible())
    load_pretrained(model, source)
    x = np.random.default_rng(0).uniform(-50, 50, (2, *shape)).astype("float32")
    np.testing.assert_allclose(_numpy(model(x)), _numpy(source(x, training=False)), atol=1e-5)
