import keras
import numpy as np
import pytest

from tfresnet import layers


def test_zero_pad_shortcut_subsamples_and_pads_channels():
    x = np.arange(2 * 4 * 4 * 2, dtype="float32").reshape(2, 4, 4, 2)
    y = keras.ops.convert_to_numpy(layers.ZeroPadShortcut(5, strides=2)(x))
    assert y.shape == (2, 2, 2, 5)
    np.testing.assert_array_equal(y[..., :2], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 2:], 0.0)


def test_zero_pad_shortcut_odd_size_and_shape_inference():
    layer = layers.ZeroPadShortcut(8, strides=2)
    assert layer.compute_output_shape((None, 5, 7, 4)) == (None, 3, 4, 8)
    y = layer(np.ones((1, 5, 7, 4), "float32"))
    assert tuple(y.shape) == (1, 3, 4, 8)


def test_zero_pad_shortcut_has_no_weights_and_round_trips_config():
    layer = layers.ZeroPadShortcut(16, strides=2, name="pad")
    layer(np.zeros((1, 4, 4, 8), "float32"))
    assert layer.weights == []
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert (clone.filters, clone.strides, clone.name) == (16, 2, "pad")


def test_zero_pad_shortcut_refuses_to_shrink_channels():
    with pytest.raises(ValueError, match="only grow channels: input has 8, filters=4"):
        layers.ZeroPadShortcut(4)(np.zeros((1, 2, 2, 8), "float32"))


def test_batch_norm_uses_paper_momentum_and_zero_gamma():
    bn = layers.batch_norm("bn", zero_gamma=True)
    y = bn(np.random.rand(4, 2, 2, 3).astype("float32"), training=True)
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), 0.0)
