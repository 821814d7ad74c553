"""The builder: a `ResNetSpec` (or a name from its table, `specs`) as a Keras model.

    build_model("resnet56")                     # CIFAR, 6n+2 layers, option A
    build_model("resnet50", num_classes=100)    # ImageNet bottleneck, option B, v1.5 strides
    backbone("resnet50")                         # {"stage1": ..., "stage4": ...} features

`count_params` and `count_flops` count a built model as the paper does; docs/models.md has more.
"""

import dataclasses
import inspect
from collections.abc import Callable, Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike

from tfresnet import blocks, machine, specs
from tfresnet.compat import recursion_headroom
from tfresnet.config import check_choice
from tfresnet.specs import ResNetSpec

# build_model's arguments that shape the classifier (or load weights), not the body.
_HEAD = ("include_top", "pooling", "classifier_activation", "num_classes", "weights", "weights_dir")


def build_model(
    name: str | ResNetSpec | dict,
    *,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | Callable | None = "softmax",
    input_tensor: keras.KerasTensor | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int | None, int | None, int] | None = None,
    shortcut: str | None = None,
    preact: bool = False,
    stride_placement: str = "v1.5",
    weight_decay: float = 0.0,
    zero_init_residual: bool = False,
    sync_bn: bool = False,
    conv_bias: bool = False,
    bn_epsilon: float = blocks.layers.BN_EPSILON,
    pixel_mean: ArrayLike | None = None,
    pixel_std: ArrayLike | None = None,
    model_name: str | None = None,
    weights: str | None = None,
    weights_dir: str | None = None,
) -> keras.Model:
    """Build a ResNet (or plain net) as a functional `keras.Model`.

    Args:
      name: str, ResNetSpec or dict: a name from the table ("resnet20", "plain56", "resnet50"),
        a spec string ("resnet20:width_multiplier=4", see `parse_model`), a `ResNetSpec`, or a
        dict of its fields.
      include_top: bool, True: average-pool, the "logits" Dense layer and a float32
        "predictions" activation; False: a headless feature extractor (keras.applications').
      pooling: str or None, for include_top=False only: None outputs the last stage's 4D
        feature map, "avg" / "max" global-pool it to (batch, channels).
      classifier_activation: str, callable or None, the "predictions" activation; None gives
        logits (for `from_logits=True` losses).
      input_tensor: a 4D Keras tensor to build the network on (a `keras.Input` or a layer's
        output); the model's inputs are then that tensor's source inputs.
      num_classes: int, classifier width; default 10 (CIFAR family) or 1000 (ImageNet).
      input_shape: (height, width, channels); default the family's or `input_tensor`'s.
      shortcut: str, "A" | "B" | "C" | "none"; default per family as in the paper.
      preact: bool, pre-activation blocks (He et al. 2016).
      stride_placement: str, bottleneck stride on the first 1x1 ("v1", the paper) or on the
        3x3 ("v1.5", torchvision; the default).
      weight_decay: float, SGD weight decay on conv and dense kernels only (never BN or biases).
      zero_init_residual: bool, start every residual branch at zero (identity blocks).
      sync_bn: bool, synchronise BN batch statistics across replicas.
      conv_bias: bool, biases on convs (only to hold keras.applications weights).
      bn_epsilon: float, BN epsilon (keras.applications uses 1.001e-5).
      pixel_mean, pixel_std: optional arrays broadcastable to input_shape; when given, the model
        takes raw pixel values and standardises them itself, so exports need no preprocessing.
      model_name: str, the Keras model's name; default the table name as given, else
        "custom_resnet<depth>" ("custom_plain<depth>").
      weights: str or None. None: random initialisation. A name of weights shipped for `name`
        ("fashion_mnist" for "resnet20"; `shipped.shipped_weights()` lists them), loaded offline
        after their sha256 is checked: the architecture arguments left out are the weights' own,
        others are refused (include_top=False loads all but the classifier, at any input size).
        Or the path of a `.weights.h5` file saved from this architecture.
      weights_dir: str, where shipped weights are looked up; default the package's own.

    Returns:
      A `keras.Model`: float32 "predictions" (batch, num_classes), or headless the last stage's
      features; layer names are the same either way, so weights carry over by name.

    Example:
      >>> build_model("resnet20", input_shape=(8, 8, 1)).output_shape
      (None, 10)
      >>> build_model("resnet20", input_shape=(8, 8, 1), include_top=False).output_shape
      (None, 2, 2, 64)
    """
    arguments = {k: v for k, v in locals().items() if k not in ("name", "weights", "weights_dir")}
    if weights is not None:
        from tfresnet import shipped

        return shipped.build_with_weights(name, weights, arguments, weights_dir)
    spec = specs.resolve_spec(name)
    kind = "resnet" if spec.residual else "plain"
    table_name = specs.canonical_name(name) if isinstance(name, str) else None
    label = table_name or spec.table_name() or f"custom_{kind}{spec.depth}"
    machine.check_memory(
        4 * spec.min_weights(),
        f"Model {name.strip() if isinstance(name, str) else label!r} (its float32 weights alone)",
        "use fewer blocks (stage_blocks) or fewer filters (stage_filters, width_multiplier)",
    )
    _check_head(include_top, pooling, classifier_activation, num_classes)
    num_classes = spec.default_num_classes if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    shortcut = spec.default_shortcut if shortcut is None else shortcut
    if not spec.residual and shortcut != "none":
        raise ValueError(f"{label} is a plain network; it takes shortcut='none', not {shortcut!r}.")
    # Basic blocks ignore it, but a config that names a placement must name a real one.
    check_choice("stride_placement", stride_placement, blocks.STRIDE_PLACEMENTS)
    inputs, x = _inputs(spec, label, input_tensor, input_shape)
    fields = dataclasses.fields(blocks.ConvSettings)  # build_model arguments of the same names
    settings = blocks.ConvSettings(**{field.name: arguments[field.name] for field in fields})
    if pixel_mean is not None or pixel_std is not None:
        mean, std = np.broadcast_arrays(
            np.asarray(0.0 if pixel_mean is None else pixel_mean, "float32"),
            np.asarray(1.0 if pixel_std is None else pixel_std, "float32"),
        )
        axis = tuple(range(-mean.ndim, 0)) or None  # per-pixel, per-channel or one scalar
        x = keras.layers.Normalization(
            axis=axis, mean=mean, variance=np.square(std), name="standardize"
        )(x)
    with recursion_headroom(50 * spec.depth):
        x = _stem(x, spec, preact, settings)
        for stage, (filters, count) in enumerate(
            zip(spec.stage_filters, spec.stage_blocks, strict=True), 1
        ):
            for index in range(1, count + 1):
                x = blocks.BLOCKS[spec.block](
                    x,
                    filters,
                    2 if index == 1 and stage > 1 else 1,
                    shortcut=shortcut,
                    preact=preact,
                    name=f"stage{stage}_block{index}",
                    settings=settings,
                    stride_placement=stride_placement,
                )
        if preact:
            x = keras.layers.ReLU(name="post_relu")(blocks.bn(x, "post_bn", settings))
        if include_top or pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        if include_top:
            x = keras.layers.Dense(
                num_classes,
                kernel_initializer="he_normal",
                kernel_regularizer=settings.regularizer(),
                name="logits",
            )(x)
            x = keras.layers.Activation(
                classifier_activation or "linear", dtype="float32", name="predictions"
            )(x)
        return keras.Model(inputs, x, name=model_name or label)


def _inputs(spec, label, input_tensor, input_shape):
    """(the model's inputs, the tensor the net starts from), the shapes checked."""
    if input_tensor is None:
        input_shape = tuple(spec.default_input_shape if input_shape is None else input_shape)
        specs.check_input_shape(input_shape, spec, label)
        x = keras.Input(shape=input_shape, name="images")
        return x, x
    if not keras.backend.is_keras_tensor(input_tensor) or len(input_tensor.shape) != 4:
        raise ValueError(
            f"input_tensor must be a 4D Keras tensor (batch, height, width, channels), such as "
            f"keras.Input((32, 32, 3)) or a layer's output; got {input_tensor!r}."
        )
    tensor_shape = tuple(input_tensor.shape[1:])
    if input_shape is not None and tuple(input_shape) != tensor_shape:
        raise ValueError(
            f"input_shape {tuple(input_shape)} differs from input_tensor's shape "
            f"{tensor_shape}; give only one of them."
        )
    specs.check_input_shape(tensor_shape, spec, label)
    sources = keras.utils.get_source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def _stem(x, spec, preact, settings):
    if spec.stem == "cifar":
        x = blocks.conv(x, spec.stem_filters, 3, 1, "stem_conv", settings)
    else:
        # Explicit padding as in keras.applications, so its weights transplant exactly.
        x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
        x = blocks.conv(x, spec.stem_filters, 7, 2, "stem_conv", settings, padding="valid")
    if not preact:
        x = keras.layers.ReLU(name="stem_relu")(blocks.bn(x, "stem_bn", settings))
    if spec.stem == "imagenet":
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    return x


def _check_head(include_top, pooling, classifier_activation, num_classes):
    if include_top not in (True, False):
        raise ValueError(f"include_top must be True or False; got {include_top!r}.")
    check_choice("pooling", pooling, (None, "avg", "max"))
    keras.activations.get(classifier_activation)  # Keras' ValueError for an unknown name
    if include_top and pooling == "max":
        raise ValueError(
            "pooling='max' applies only with include_top=False; the classifier average-pools."
        )
    if not include_top and (num_classes is not None or classifier_activation != "softmax"):
        raise ValueError(
            f"num_classes={num_classes!r} and classifier_activation={classifier_activation!r} "
            f"apply only with include_top=True; a headless model has no classifier."
        )


def backbone(
    name: str | ResNetSpec | dict, *, model_name: str | None = None, **kwargs
) -> keras.Model:
    """A ResNet's stem and stages as a multi-scale feature extractor (detection, segmentation).

    Args:
      name: str, ResNetSpec or dict, as for `build_model`.
      model_name: str, the Keras model's name; default "<name>_backbone".
      **kwargs: `build_model`'s body arguments: input_shape, input_tensor, shortcut, preact,
        stride_placement, weight_decay, zero_init_residual, sync_bn, conv_bias, bn_epsilon,
        pixel_mean, pixel_std.

    Returns:
      A `keras.Model` whose output is a dict {"stage1": ..., ...} of each stage's last block
      output (keras-hub's `pyramid_outputs`; strides from `feature_strides(name)`), with
      `build_model`'s layer names. Pre-activation outputs come before the final BN-ReLU.

    Example:
      >>> features = backbone("resnet20", input_shape=(16, 16, 3))
      >>> {key: tensor.shape for key, tensor in features.output.items()}
      {'stage1': (None, 16, 16, 16), 'stage2': (None, 8, 8, 32), 'stage3': (None, 4, 4, 64)}
    """
    parameters = inspect.signature(build_model).parameters
    body = [key for key in parameters if key not in ("name", "model_name", *_HEAD)]
    unknown = [key for key in kwargs if key not in body]
    if unknown:
        raise ValueError(
            f"backbone() takes build_model's body arguments ({', '.join(body)}), not "
            f"{', '.join(unknown)}; it has no classifier (for a pooled feature vector: "
            f"build_model(..., include_top=False, pooling='avg'))."
        )
    headless = build_model(name, include_top=False, **kwargs)
    stages = {}
    for layer in headless.layers:  # in graph order: a stage's last layer is its output
        if layer.name.startswith("stage"):
            stages[layer.name.split("_")[0]] = layer.output
    with recursion_headroom(50 * specs.resolve_spec(name).depth):
        return keras.Model(headless.input, stages, name=model_name or f"{headless.name}_backbone")


def count_params(model: keras.Model) -> int:
    """Trainable parameters (what the paper and torchvision count; excludes BN moving stats)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def count_flops(model: keras.Model) -> int:
    """Multiply-adds of one image through the convs and dense layers (the paper's "FLOPs")."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            total += height * width * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def model_table(
    names: Sequence[str | ResNetSpec | dict] | None = None, input_size: int | None = None
) -> list[tuple[str, int, str, int, int]]:
    """Rows (name, layers, shortcut, params, multiply-adds) for the named networks: model
    names, spec strings or specs, as `build_model` takes them."""
    rows = []
    for name in names or specs.listed_names():
        spec = specs.resolve_spec(name)
        size = input_size or spec.default_input_shape[0]
        stride = "v1" if spec.family == "imagenet" else "v1.5"
        model = build_model(name, input_shape=(size, size, 3), stride_placement=stride)
        label = name.strip() if isinstance(name, str) else spec.to_string()
        row = (label, spec.depth, spec.default_shortcut, count_params(model), count_flops(model))
        rows.append(row)
        keras.backend.clear_session()
    return rows
