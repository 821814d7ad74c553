import keras
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import blocks, layers, models


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


def test_zero_pad_shortcut_gradient_is_the_strided_slice_gradient():
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32"))
    weights = tf.constant(np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layers.ZeroPadShortcut(4, strides=2)(x) * weights)
    expected = np.zeros((2, 5, 5, 3), "float32")
    expected[:, ::2, ::2, :] = weights[..., :3]
    np.testing.assert_array_equal(np.asarray(tape.gradient(loss, x)), expected)


def test_zero_pad_shortcut_has_no_weights_and_round_trips_config():
    layer = layers.ZeroPadShortcut(16, strides=2, name="pad")
    layer(np.zeros((1, 4, 4, 8), "float32"))
    assert layer.weights == []
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert (clone.filters, clone.strides, clone.name) == (16, 2, "pad")


def test_zero_pad_shortcut_refuses_to_shrink_channels():
    with pytest.raises(ValueError, match="only grow channels: input has 8, filters=4"):
        layers.ZeroPadShortcut(4)(np.zeros((1, 2, 2, 8), "float32"))


@pytest.mark.parametrize("sync_bn", [False, True])
def test_blocks_batch_norm_is_the_fused_layer_with_paper_momentum_and_zero_gamma(sync_bn):
    inputs = keras.Input((2, 2, 3))
    settings = blocks.ConvSettings(sync_bn=sync_bn)
    bn = keras.Model(inputs, blocks.bn(inputs, "bn", settings, zero_gamma=True)).get_layer("bn")
    assert type(bn) is layers.BatchNormalization and bn.synchronized == sync_bn
    y = bn(np.random.rand(4, 2, 2, 3).astype("float32"), training=True)
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), 0.0)


# --- BatchNormalization on TF's fused kernel, against Keras' own layer ----------------------


def _bn_pair(shape=(4, 3, 3, 5), **kwargs):
    """A fused and a Keras BN with the same config and the same random non-trivial weights."""
    config = dict(momentum=0.9, epsilon=1e-5, **kwargs)
    fused, reference = (
        layers.BatchNormalization(**config),
        keras.layers.BatchNormalization(**config),
    )
    fused.build(shape)
    reference.build(shape)
    rng = np.random.default_rng(1)
    channels = shape[-1]
    weights = [
        rng.uniform(0.5, 2.0, channels),
        rng.normal(0, 1, channels),
        rng.normal(0, 1, channels),
        rng.uniform(0.5, 2.0, channels),
    ]
    for layer in (fused, reference):
        layer.set_weights([w.astype("float32") for w in weights[: len(layer.weights)]])
    return fused, reference


def _ops_of(layer, x, training):
    fn = tf.function(lambda t: layer(t, training=training))
    return fn.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph.get_operations()


def _inputs(shape=(4, 3, 3, 5), seed=2):
    return (np.random.default_rng(seed).normal(3.0, 2.0, shape)).astype("float32")


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_outputs_equal_keras(training):
    fused, reference = _bn_pair()
    x = _inputs()
    np.testing.assert_allclose(
        np.asarray(fused(x, training=training)),
        np.asarray(reference(x, training=training)),
        atol=1e-5,
    )
    assert "FusedBatchNormV3" in [op.type for op in _ops_of(fused, x, training)]


def test_fused_batch_norm_moving_statistics_equal_keras():
    """Keras averages the biased batch variance; the kernel's Bessel correction is undone."""
    fused, reference = _bn_pair()
    for seed in range(3):
        x = _inputs(seed=seed)
        fused(x, training=True)
        reference(x, training=True)
    for a, b in zip(fused.non_trainable_weights, reference.non_trainable_weights, strict=True):
        assert a.path.split("/")[-1] == b.path.split("/")[-1]
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    # One update by hand: 0.9 * old + 0.1 * population variance of the batch.
    fused, _ = _bn_pair()
    old = np.asarray(fused.moving_variance)
    x = _inputs()
    fused(x, training=True)
    expected = 0.9 * old + 0.1 * x.reshape(-1, 5).var(axis=0)
    np.testing.assert_allclose(np.asarray(fused.moving_variance), expected, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_gradients_equal_keras(training):
    fused, reference = _bn_pair()
    x = tf.constant(_inputs())
    weights = tf.constant(np.random.default_rng(3).normal(size=x.shape).astype("float32"))
    grads = []
    for layer in (fused, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * weights)
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # trainings; the layer's forward equality tests stay
def test_fused_batch_norm_resnet_training_curve_equals_keras():
    fused = models.build_model("resnet8", input_shape=(8, 8, 3))
    reference = layers.with_keras_batch_norm(fused)
    assert type(fused.get_layer("stem_bn")) is layers.BatchNormalization
    assert type(reference.get_layer("stem_bn")) is keras.layers.BatchNormalization
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 10, (3, 8))
    curves = []
    for model in (fused, reference):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss="sparse_categorical_crossentropy",
        )
        curves.append([float(model.train_on_batch(xb, yb)) for xb, yb in zip(x, y, strict=True)])
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-4)
    assert curves[0][-1] != curves[0][0]  # it trained
    for a, b in zip(fused.weights, reference.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_fused_batch_norm_saves_reloads_in_safe_mode_and_shares_checkpoints(tmp_path):
    model = models.build_model("resnet8", input_shape=(8, 8, 3))
    x = _inputs((2, 8, 8, 3))
    model(x, training=True)  # move the statistics away from their initial values
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded.get_layer("stem_bn")) is layers.BatchNormalization
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), atol=1e-6)
    # Same weight names and shapes, same .weights.h5 layout: files load across the two layers.
    reference = layers.with_keras_batch_norm(model)
    reference.set_weights([np.zeros_like(w) for w in reference.get_weights()])
    model.save_weights(tmp_path / "fused.weights.h5")
    reference.load_weights(tmp_path / "fused.weights.h5")
    names = [w.path.split("/")[-1] for w in model.get_layer("stem_bn").weights]
    assert names == ["gamma", "beta", "moving_mean", "moving_variance"]
    np.testing.assert_allclose(np.asarray(reference(x)), np.asarray(model(x)), atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_fused_batch_norm_mixed_precision_feeds_half_activations(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        fused, reference = _bn_pair()
        x = tf.cast(_inputs(), fused.compute_dtype)
        y, expected = fused(x, training=True), reference(x, training=True)
        assert y.dtype == x.dtype and fused.moving_mean.dtype == "float32"
        np.testing.assert_allclose(
            np.asarray(tf.cast(y, "float32")), np.asarray(tf.cast(expected, "float32")), atol=0.05
        )
        np.testing.assert_allclose(
            np.asarray(fused.moving_variance), np.asarray(reference.moving_variance), rtol=1e-2
        )
        ops = _ops_of(fused, x, training=True)
        kernel = next(op for op in ops if op.type == "FusedBatchNormV3")
        assert kernel.get_attr("T") == x.dtype and kernel.get_attr("U") == tf.float32
        assert not [op for op in ops if op.type == "Cast" and op.get_attr("DstT") == x.dtype]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fused_batch_norm_falls_back_to_keras_where_the_kernel_does_not_apply():
    x2d = _inputs((6, 5))
    fused, reference = _bn_pair(shape=(6, 5))
    np.testing.assert_allclose(
        np.asarray(fused(x2d, training=True)), np.asarray(reference(x2d, training=True)), atol=1e-5
    )
    assert "FusedBatchNormV3" not in [op.type for op in _ops_of(fused, x2d, True)]
    synced, _ = _bn_pair(synchronized=True)
    assert "FusedBatchNormV3" not in [op.type for op in _ops_of(synced, _inputs(), True)]


def test_with_keras_batch_norm_copies_weights_onto_keras_layers():
    model = models.build_model("resnet8", input_shape=(8, 8, 3))
    copy = layers.with_keras_batch_norm(model)
    assert type(copy.get_layer("stem_bn")) is keras.layers.BatchNormalization
    assert copy.get_layer("stem_bn").get_config() == model.get_layer("stem_bn").get_config()
    for a, b in zip(copy.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_frozen_fused_batch_norm_uses_moving_statistics_and_keeps_them_during_fit():
    """Keras' trainable=False: a frozen BN normalises with its moving statistics even while the
    model trains (the fine-tuning semantics), and fit never updates them."""
    fused, _ = _bn_pair()  # non-trivial gamma, beta and moving statistics
    fused.trainable = False
    x = _inputs()
    gamma, beta, mean, variance = (np.asarray(w) for w in fused.weights)
    expected = (x - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), expected, atol=1e-4)
    kernel = next(op for op in _ops_of(fused, x, True) if op.type == "FusedBatchNormV3")
    assert not kernel.get_attr("is_training")  # the fused kernel, in inference mode

    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(fused(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    y = np.random.default_rng(4).normal(size=(4, 3, 3, 1)).astype("float32")
    frozen = [np.asarray(w) for w in fused.weights]
    head = np.asarray(model.get_layer("head").kernel)
    # train_on_batch reports the loss of its training-mode forward pass, before the update:
    # the same as inference everywhere only if the BN used its moving statistics.
    inference_loss = model.test_on_batch(x, y)
    assert model.train_on_batch(x, y) == pytest.approx(inference_loss, rel=1e-5)
    model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    for before, after in zip(frozen, fused.weights, strict=True):
        np.testing.assert_array_equal(before, np.asarray(after))
    assert not np.allclose(head, np.asarray(model.get_layer("head").kernel))  # the head trained

    # The control: unfrozen (and recompiled), the same layer trains on batch statistics.
    fused.trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    inference_loss = model.test_on_batch(x, y)
    assert model.train_on_batch(x, y) != pytest.approx(inference_loss, rel=1e-3)
    assert not np.allclose(frozen[2], np.asarray(fused.moving_mean))
