import keras
import numpy as np
import pytest

from tfresnet import inference, models


def _with_random_statistics(model, seed=0):
    """Give every BN non-trivial trained-looking weights, so folding has something to fold."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            values = {
                "gamma": rng.uniform(0.5, 1.5, channels),
                "beta": rng.uniform(-0.2, 0.2, channels),
                "moving_mean": rng.uniform(-0.5, 0.5, channels),
                "moving_variance": rng.uniform(0.5, 2.0, channels),
            }
            for weight in layer.weights:
                weight.assign(values[weight.path.split("/")[-1]])
    return model


def _logits(model, x):
    """The input of the softmax: probabilities saturate and would hide differences."""
    return keras.Model(model.inputs, model.layers[-1].input)(x, training=False).numpy()


def _bn_names(model):
    return {
        layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    }


@pytest.mark.parametrize(
    "name, kwargs, folded, kept",
    [
        ("resnet8", {}, 7, set()),
        pytest.param("plain8", {}, 7, set(), marks=pytest.mark.slow),  # A's fold minus adds
        ("resnet8", {"shortcut": "B"}, 9, set()),
        pytest.param("resnet8", {"shortcut": "C"}, 10, set(), marks=pytest.mark.slow),  # B's
        # Pre-activation: a BN on the block input (also the shortcut) or after the last add
        # has no conv of its own to go into.
        ("resnet8", {"preact": True}, 3, {f"stage{s}_block1_bn1" for s in (1, 2, 3)} | {"post_bn"}),
    ],
)
def test_fold_gives_the_same_logits_without_the_foldable_batch_norms(name, kwargs, folded, kept):
    model = _with_random_statistics(models.build_model(name, input_shape=(8, 8, 3), **kwargs))
    before = [w.numpy().copy() for w in model.weights]
    x = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype("float32")

    served = inference.fold_batch_norm(model)

    assert len(inference.foldable_pairs(model)) == folded
    assert _bn_names(served) == kept
    expected = _logits(model, x)
    assert np.abs(expected).max() > 1.0  # a real signal, not all zeros
    np.testing.assert_allclose(_logits(served, x), expected, rtol=1e-5, atol=1e-4)
    for conv_name in inference.foldable_pairs(model):
        assert served.get_layer(conv_name).use_bias
    assert served.name == model.name
    for weight, value in zip(model.weights, before, strict=True):  # the trained model is left alone
        np.testing.assert_array_equal(weight.numpy(), value)


@pytest.mark.slow  # two ResNet-50s; the CIFAR folds run by default
def test_fold_of_a_bottleneck_net_and_of_keras_applications():
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    ours = _with_random_statistics(models.build_model("resnet50", input_shape=(32, 32, 3)))
    served = inference.fold_batch_norm(ours)
    assert len(inference.foldable_pairs(ours)) == 53 and not _bn_names(served)
    expected = _logits(ours, x)
    np.testing.assert_allclose(
        _logits(served, x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )

    # keras.applications' convs carry a bias, which the fold must keep.
    theirs = _with_random_statistics(
        keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    )
    served = inference.fold_batch_norm(theirs)
    assert len(inference.foldable_pairs(theirs)) == 53
    expected = _logits(theirs, x / 255.0)
    np.testing.assert_allclose(_logits(served, x / 255.0), expected, rtol=1e-4, atol=1e-5)


def test_fold_under_mixed_bfloat16_matches_within_bfloat16_rounding():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _with_random_statistics(models.build_model("resnet8", input_shape=(8, 8, 3)))
        served = inference.fold_batch_norm(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = np.random.default_rng(3).uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    expected, got = _logits(model, x).astype("float32"), _logits(served, x).astype("float32")
    assert served.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert served.get_layer("stem_conv").bias.dtype == "float32"
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.05 * scale  # bfloat16 keeps 8 bits of mantissa
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_folded_model_saves_and_reloads_in_safe_mode(tmp_path):
    model = _with_random_statistics(models.build_model("resnet8", input_shape=(8, 8, 3)))
    served = inference.fold_batch_norm(model)
    path = str(tmp_path / "served.keras")
    served.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), served.predict(x, verbose=0))


class _ScaledConv(keras.layers.Conv2D):
    """A conv subclass whose output is not conv(x): folding must leave it alone."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


def _conv_bn_model(activation=None, extra_use=False, conv_class=keras.layers.Conv2D):
    inputs = keras.Input((6, 6, 2))
    y = conv_class(3, 3, padding="same", activation=activation, name="conv")(inputs)
    z = keras.layers.BatchNormalization(name="bn")(y)
    outputs = keras.layers.GlobalAveragePooling2D()(z)
    if extra_use:
        outputs = keras.layers.Concatenate()([outputs, keras.layers.GlobalMaxPooling2D()(y)])
    return _with_random_statistics(keras.Model(inputs, outputs))


@pytest.mark.parametrize(
    "kwargs",
    [{"activation": "relu"}, {"extra_use": True}, {"conv_class": _ScaledConv}],
    ids=["conv_activation", "shared_conv", "conv_subclass"],
)
def test_batch_norm_that_cannot_be_folded_is_kept(kwargs):
    model = _conv_bn_model(**kwargs)
    served = inference.fold_batch_norm(model)
    assert inference.foldable_pairs(model) == {}
    assert _bn_names(served) == {"bn"}
    np.testing.assert_array_equal(served.get_layer("conv").kernel, model.get_layer("conv").kernel)
    x = np.random.default_rng(5).normal(size=(2, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(served(x).numpy(), model(x, training=False).numpy(), rtol=1e-6)


def test_sequential_models_fold_and_subclassed_models_are_refused():
    sequential = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    _with_random_statistics(sequential)
    served = inference.fold_batch_norm(sequential)
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 2)).astype("float32")
    assert not _bn_names(served)
    np.testing.assert_allclose(served(x).numpy(), sequential(x, training=False).numpy(), atol=1e-5)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or Sequential keras.Model; .* subclassed"):
        inference.fold_batch_norm(Subclassed())
