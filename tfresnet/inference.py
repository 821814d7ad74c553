"""The inference form of a trained model: each BatchNormalization folded into the conv before it.

At inference BN is the affine map (x - mean) * s + beta, s = gamma / sqrt(var + eps), so the conv
absorbs it: kernel * s, bias (b - mean) * s + beta; TF then fuses conv, bias and ReLU (faster:
docs/performance.md). The folded model has no batch statistics left to train.
"""

import keras
import numpy as np


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of a built functional or Sequential `model` (left unchanged) with each BN of
    `foldable_pairs` merged into its conv: the same inputs, outputs and other layer names, equal
    to `model(x, training=False)` up to float rounding.

    Example:
      >>> served = fold_batch_norm(build_model("resnet20"))
    """
    functional = _as_functional(model)
    pairs = foldable_pairs(functional)
    folded_bns = {bn.name for bn in pairs.values()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in folded_bns:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(functional, clone_function=clone, call_function=call)
    for layer in functional.layers:
        if layer.name in folded_bns or not layer.weights:
            continue
        target = folded.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(_folded_weights(layer, pairs[layer.name]))
        else:
            target.set_weights(layer.get_weights())
    return folded


def foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """{conv layer name: the BatchNormalization that can be folded into it}: a BN whose input is
    a plain `keras.layers.Conv2D`'s alone, with no activation, on the conv's channel axis."""
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        source = bn._inbound_nodes[0].input_tensors[0]
        conv = source._keras_history.operation
        if (
            type(conv) is keras.layers.Conv2D  # a subclass may compute something else
            and conv.activation is keras.activations.linear
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
            and id(source) not in outputs
            and _channel_axis(bn, len(source.shape)) == _channel_axis(conv, len(source.shape))
        ):
            pairs[conv.name] = bn
    return pairs


def _channel_axis(layer, rank):
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis % rank
    return rank - 1 if layer.data_format == "channels_last" else 1


def _folded_weights(conv, bn):
    """[kernel, bias] of `conv` followed by `bn` in inference mode (computed in float64)."""
    kernel = np.asarray(conv.kernel, "float64")
    channels = kernel.shape[-1]
    bias = np.asarray(conv.bias, "float64") if conv.use_bias else np.zeros(channels)
    gamma = np.asarray(bn.gamma, "float64") if bn.scale else np.ones(channels)
    beta = np.asarray(bn.beta, "float64") if bn.center else np.zeros(channels)
    mean = np.asarray(bn.moving_mean, "float64")
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance, "float64") + bn.epsilon)
    dtype = conv.kernel.dtype
    return [(kernel * scale).astype(dtype), ((bias - mean) * scale + beta).astype(dtype)]


def _as_functional(model):
    """`model` as a functional graph of layers (a Sequential model becomes one)."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            raise ValueError(f"fold_batch_norm needs a built model; {model.name} is not built.")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "_run_through_graph"):
        raise ValueError(
            f"fold_batch_norm needs a functional or Sequential keras.Model; {model.name} is a "
            f"subclassed {type(model).__name__}, whose graph cannot be rewritten."
        )
    return model
