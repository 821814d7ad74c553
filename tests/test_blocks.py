import keras
import numpy as np
import pytest

from tfresnet import blocks


def _block_model(block_fn, in_channels, filters, strides, **kwargs):
    inputs = keras.Input((8, 8, in_channels))
    settings = kwargs.pop("settings", blocks.ConvSettings())
    outputs = block_fn(inputs, filters, strides, name="b", settings=settings, **kwargs)
    return keras.Model(inputs, outputs)


def _weights_by_kind(model):
    return sorted(layer.__class__.__name__ for layer in model.layers if layer.weights)


@pytest.mark.parametrize(
    "option, strides, out_channels, extra_layers",
    [
        ("A", 1, 4, []),
        ("A", 2, 8, []),
        ("B", 1, 4, []),
        ("B", 2, 8, ["BatchNormalization", "Conv2D"]),
        ("C", 1, 4, ["BatchNormalization", "Conv2D"]),
        ("none", 2, 8, []),
    ],
)
def test_basic_block_shortcut_options(option, strides, out_channels, extra_layers):
    model = _block_model(
        blocks.basic_block, 4, out_channels, strides, shortcut=option, preact=False
    )
    assert model.output_shape == (None, 8 // strides, 8 // strides, out_channels)
    expected = sorted(
        ["BatchNormalization", "BatchNormalization", "Conv2D", "Conv2D"] + extra_layers
    )
    assert _weights_by_kind(model) == expected
    names = {layer.name for layer in model.layers}
    assert ("b_add" in names) == (option != "none")


@pytest.mark.parametrize("placement, strided_conv", [("v1", "b_conv1"), ("v1.5", "b_conv2")])
def test_bottleneck_stride_placement(placement, strided_conv):
    model = _block_model(
        blocks.bottleneck_block, 16, 4, 2, shortcut="B", preact=False, stride_placement=placement
    )
    assert model.output_shape == (None, 4, 4, 16)
    strided = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)
    ]
    assert sorted(strided) == sorted([strided_conv, "b_shortcut_conv"])


def test_zero_initialised_residual_block_is_identity_plus_relu():
    """The paper's argument: if the identity is optimal, the residual branch can go to zero."""
    settings = blocks.ConvSettings(zero_init_residual=True)
    model = _block_model(blocks.basic_block, 4, 4, 1, shortcut="A", preact=False, settings=settings)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    for training in (False, True):
        y = keras.ops.convert_to_numpy(model(x, training=training))
        np.testing.assert_allclose(y, np.maximum(x, 0.0), atol=1e-6)


def test_zero_initialised_preact_block_is_exact_identity():
    settings = blocks.ConvSettings(zero_init_residual=True)
    model = _block_model(
        blocks.bottleneck_block, 16, 4, 1, shortcut="B", preact=True, settings=settings
    )
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 16)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), x, atol=1e-6)


def test_preact_projection_reads_preactivated_input():
    model = _block_model(blocks.basic_block, 4, 8, 2, shortcut="B", preact=True)
    shortcut_conv = model.get_layer("b_shortcut_conv")
    assert shortcut_conv.input is model.get_layer("b_relu1").output
    # Pre-activation projections carry no BN and the sum is not followed by a ReLU.
    names = {layer.name for layer in model.layers}
    assert "b_shortcut_bn" not in names and "b_out" not in names


def test_weight_decay_regularises_kernels_only():
    settings = blocks.ConvSettings(weight_decay=1e-4)
    model = _block_model(blocks.basic_block, 4, 8, 2, shortcut="B", preact=False, settings=settings)
    model(np.zeros((1, 8, 8, 4), "float32"))
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(model.losses) == len(kernels) == 3
    expected = sum(
        0.5e-4 * float(np.sum(np.square(keras.ops.convert_to_numpy(k)))) for k in kernels
    )
    total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert total == pytest.approx(expected, rel=1e-5)


def test_unknown_shortcut_and_stride_placement_are_rejected():
    with pytest.raises(ValueError, match="Unknown shortcut 'D'; allowed: A, B, C, none"):
        _block_model(blocks.basic_block, 4, 4, 1, shortcut="D", preact=False)
    with pytest.raises(ValueError, match="Unknown stride_placement 'v2'"):
        _block_model(
            blocks.bottleneck_block, 4, 4, 1, shortcut="B", preact=False, stride_placement="v2"
        )


# --- the blocks as public API -----------------------------------------------------------------


def test_public_blocks_compose_into_a_custom_model():
    """A model that is no ResNet of the table, made of the exported blocks, trains."""
    import tfresnet

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="my_stem")(inputs)
    x = tfresnet.basic_block(x, 8)  # same shape: identity shortcut
    x = tfresnet.bottleneck_block(x, 8, 2)  # 32 channels, 8x8: projection shortcut
    x = tfresnet.residual_unit(x, [(16, 1, 1), (16, 3, 2)], shortcut="C", preact=True)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    assert model.output_shape == (None, 4)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))  # default block names are unique
    assert "basic_block1_add" in names and "bottleneck_block1_shortcut_conv" in names
    assert "basic_block1_shortcut_conv" not in names  # option B projects only where needed
    assert model.get_layer("residual_unit1_conv2").strides == (2, 2)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(4, 16, 16, 3)).astype("float32"), rng.integers(0, 4, 4)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    losses = model.fit(x, y, epochs=3, batch_size=4, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: blocks.basic_block(x, 0), "ints >= 1; got \\[\\(0, 3, 1\\)"),
        (lambda x: blocks.basic_block(x, 4, 1.5), "ints >= 1; got \\[\\(4, 3, 1.5\\)"),
        (lambda x: blocks.basic_block(keras.Input((4,)), 4), "expected min_ndim=4, found ndim=2"),
        (lambda x: blocks.residual_unit(x, []), "convs must be a non-empty list"),
        (lambda x: blocks.residual_unit(x, [(4, 3)]), "\\(filters, kernel_size, strides\\)"),
        (lambda x: blocks.basic_block(x, True), "ints >= 1; got \\[\\(True, 3, 1\\)"),
        (lambda x: blocks.basic_block(x, 4.0), "ints >= 1; got \\[\\(4.0, 3, 1\\)"),
        (lambda x: blocks.bottleneck_block(x, 4, True), "ints >= 1"),
        (lambda x: blocks.basic_block(x, 4, preact="yes"), "preact must be True or False"),
        (lambda x: blocks.basic_block(x, 4, settings={}), "settings must be a ConvSettings"),
        (lambda x: blocks.basic_block(x, 2, shortcut="A"), "input has 4, filters=2; use shortcut"),
    ],
)
def test_public_blocks_validate_arguments(call, message):
    x = keras.Input((8, 8, 4))
    with pytest.raises(ValueError, match=message):
        call(x)
