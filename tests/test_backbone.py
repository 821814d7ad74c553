"""ResNets as parts of users' models: multi-scale backbones, dense heads and fine-tuning."""

import keras
import numpy as np
import pytest

from tfresnet import backbone, build_model, feature_strides, layers, models, pretrained


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _images(shape, batch=4, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, *shape)).astype("float32")


@pytest.mark.parametrize(
    "name, shape, channels",
    [
        ("resnet8", (8, 8, 3), (16, 32, 64)),
        ("resnet18", (32, 32, 3), (64, 128, 256, 512)),
        (
            "imagenet:block=bottleneck;stage_blocks=1,1,1,1;stage_filters=4,8,16,32",
            (32, 32, 3),
            (16, 32, 64, 128),
        ),
    ],
)
def test_backbone_stage_shapes_follow_feature_strides(name, shape, channels):
    features = backbone(name, input_shape=shape)
    strides = feature_strides(name)
    assert list(features.output) == list(strides) == [f"stage{i + 1}" for i in range(len(channels))]
    outputs = features(_images(shape, batch=2))
    for (key, stride), width in zip(strides.items(), channels, strict=True):
        expected = (2, shape[0] // stride, shape[1] // stride, width)
        assert tuple(outputs[key].shape) == expected, key


def test_feature_strides_cifar_and_imagenet():
    assert feature_strides("resnet56") == {"stage1": 1, "stage2": 2, "stage3": 4}
    assert feature_strides("resnet50") == {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}


def test_backbone_has_the_classifiers_layers_and_options():
    full = build_model("resnet8", input_shape=(8, 8, 3), preact=True, shortcut="B")
    features = backbone("resnet8", input_shape=(8, 8, 3), preact=True, shortcut="B")
    assert features.name == "resnet8_backbone"
    names = [layer.name for layer in features.layers]
    assert names == [n for n in (layer.name for layer in full.layers) if n in names]
    assert set(layer.name for layer in full.layers) - set(names) == {
        "post_bn",
        "post_relu",
        "avg_pool",
        "logits",
        "predictions",
    }
    assert models.count_params(full) - models.count_params(features) == 2 * 64 + 64 * 10 + 10


def test_backbone_on_an_existing_tensor_and_bad_arguments():
    images = keras.Input((8, 8, 3))
    features = backbone("resnet8", input_tensor=keras.layers.Rescaling(1 / 255)(images))
    assert features.inputs == [images]
    with pytest.raises(ValueError, match="body arguments \\(input_tensor, .*\\), not pooling"):
        backbone("resnet8", pooling="avg")
    with pytest.raises(ValueError, match="not num_classes, widht; it has no classifier"):
        backbone("resnet8", num_classes=3, widht=2)


def test_dense_prediction_head_on_two_stages_trains_with_fit():
    """A small FPN-style head: 1x1 convs on stage2 and stage3, stage3 upsampled and added, a
    per-pixel logit at stride 2, trained end to end for a few steps; the loss goes down."""
    shape = (16, 16, 3)
    features = backbone("resnet8", input_shape=shape)
    inputs = keras.Input(shape)
    stages = features(inputs)
    coarse = keras.layers.Conv2D(8, 1, name="lateral3")(stages["stage3"])
    fine = keras.layers.Conv2D(8, 1, name="lateral2")(stages["stage2"])
    merged = keras.layers.Add()([fine, keras.layers.UpSampling2D(2)(coarse)])
    logits = keras.layers.Conv2D(1, 1, name="mask_logits")(merged)
    model = keras.Model(inputs, logits)
    stride = feature_strides("resnet8")["stage2"]
    assert model.output_shape == (None, 16 // stride, 16 // stride, 1)
    x = _images(shape, batch=8)
    masks = (np.random.default_rng(1).uniform(size=(8, 8, 8, 1)) > 0.5).astype("float32")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    losses = model.fit(x, masks, batch_size=8, epochs=3, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def _weights(layer_or_model):
    return [np.array(w) for w in layer_or_model.weights]


def _batch_norm_statistics(model):
    return [
        np.array(w)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in (layer.moving_mean, layer.moving_variance)
    ]


def test_fine_tuning_recipe(tmp_path):
    """docs/models.md's recipe: trained weights into a headless net, frozen with BN in inference
    mode while a new head trains, then unfrozen (BN still frozen) at a lower learning rate."""
    shape = (8, 8, 3)
    rng = np.random.default_rng(0)
    x, labels = _images(shape, batch=8), rng.integers(0, 3, 8)

    # A "pretrained" classifier: a few steps, so its BN statistics are its own.
    trained = build_model("resnet8", input_shape=shape)
    trained.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    trained.fit(_images(shape, batch=8, seed=5), rng.integers(0, 10, 8), epochs=2, verbose=0)
    trained.save(tmp_path / "trained.keras")

    features = build_model("resnet8", input_shape=shape, include_top=False, pooling="avg")
    report = pretrained.load_weights_by_name(features, tmp_path / "trained.keras")
    assert len(report.loaded) == 14 and report.skipped == {}
    cut = keras.Model(trained.input, trained.get_layer("avg_pool").output)
    np.testing.assert_allclose(_numpy(features(x)), _numpy(cut(x)), atol=1e-5)

    # Phase 1: frozen backbone (BN in inference mode, statistics fixed), new head.
    features.trainable = False
    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Dense(3, name="new_head")(features(inputs)))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    frozen = _weights(features)
    stem = _numpy(features.get_layer("stem_conv").kernel)
    inference_loss = model.test_on_batch(x, labels)
    assert model.train_on_batch(x, labels) == pytest.approx(inference_loss, rel=1e-5)
    losses = model.fit(x, labels, batch_size=4, epochs=3, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    for before, after in zip(frozen, _weights(features), strict=True):
        np.testing.assert_array_equal(before, after)

    # Phase 2: unfreeze everything but BN, recompile at a lower learning rate.
    features.trainable = True
    for layer in features.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, labels, batch_size=4, epochs=1, verbose=0)
    assert not np.allclose(stem, _numpy(features.get_layer("stem_conv").kernel))  # it trains
    statistics = _batch_norm_statistics(features)
    for before, after in zip(_batch_norm_statistics(cut), statistics, strict=True):
        np.testing.assert_array_equal(before, after)
    assert type(features.get_layer("stem_bn")) is layers.BatchNormalization  # the fused layer


def test_load_weights_by_name_reports_and_refuses_mismatches():
    full = build_model("resnet8", input_shape=(8, 8, 3), num_classes=10)
    features = backbone("resnet8", input_shape=(8, 8, 3))
    # Back from a backbone into a classifier: only the new classifier is left as it was.
    report = pretrained.load_weights_by_name(full, features)
    assert report.skipped == {"logits": "resnet8_backbone has no layer logits"}
    wide = build_model("resnet8:width_multiplier=2", input_shape=(8, 8, 3))
    stem = _weights(wide.get_layer("stem_conv"))
    with pytest.raises(ValueError, match="Layer stage1_block1_conv1: weight shapes"):
        pretrained.load_weights_by_name(wide, full)
    np.testing.assert_array_equal(stem[0], _weights(wide.get_layer("stem_conv"))[0])
    with pytest.raises(ValueError, match="source must be a keras.Model or a .keras file"):
        pretrained.load_weights_by_name(wide, {"stem_conv": []})
