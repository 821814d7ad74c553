import dataclasses
import doctest
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from repo_files import repo_file

from tfresnet import blocks, layers, models, pretrained, shipped, specs, untrusted
from tfresnet.models import build_model, count_flops, count_params

# Every named network: (trainable params, multiply-adds of one image at the paper's input:
# 32x32x3 and 10 classes for CIFAR nets; 224x224x3, 1000 classes and v1 strides for ImageNet
# ones). README.md's table; the ImageNet ResNets' params are torchvision's.
TABLE = {
    "resnet20": (269_722, 40_551_040),
    "resnet32": (464_154, 68_862_592),
    "resnet44": (658_586, 97_174_144),
    "resnet56": (853_018, 125_485_696),
    "resnet110": (1_727_962, 252_887_680),
    "resnet1202": (19_421_274, 2_829_238_912),
    "plain20": (269_722, 40_551_040),
    "plain32": (464_154, 68_862_592),
    "plain44": (658_586, 97_174_144),
    "plain56": (853_018, 125_485_696),
    "plain110": (1_727_962, 252_887_680),
    "resnet18": (11_689_512, 1_814_073_344),
    "resnet34": (21_797_672, 3_663_761_408),
    "resnet50": (25_557_032, 3_857_973_248),
    "resnet101": (44_549_160, 7_570_194_432),
    "resnet152": (60_192_808, 11_282_415_616),
    "resnet200": (64_673_832, 14_776_270_848),
    "plain18": (11_515_688, 1_794_805_760),
    "plain34": (21_623_848, 3_644_493_824),
}
# The paper's figures as it prints them: Table 6's params in millions, Table 1's "FLOPs"
# (multiply-adds) in billions, the same for a plain net and its ResNet.
TABLE6_MILLIONS = {
    "resnet20": "0.27", "resnet32": "0.46", "resnet44": "0.66", "resnet56": "0.85",
    "resnet110": "1.7", "resnet1202": "19.4",
}  # fmt: skip
TABLE1_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6,
                "resnet152": 11.3, "plain18": 1.8, "plain34": 3.6}  # fmt: skip
# Each takes more than a few seconds through the harness (on 2 cores); their blocks are covered.
# The 6n+2 family is one builder: resnet20/32 and plain20/32 stand for 44, 56 and 110 by default.
SLOW = ("resnet44", "plain44", "resnet56", "plain56", "resnet110", "plain110", "resnet1202",
        "resnet34", "plain34", "resnet50", "resnet101", "resnet152", "resnet200")  # fmt: skip
# Inputs whose sides halve exactly through every stride, as the paper's do: 1/4 and 1/7 of them.
TINY = {"cifar": ((8, 8, 3), 4), "imagenet": ((32, 32, 3), 7)}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _images(shape=(8, 8, 3), batch=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, *shape)).astype("float32")


def paper_multiply_adds(model, scale):
    """`count_flops` at `scale` times the input's sides, from a model built at the small input:
    every conv output then has scale**2 times the pixels, the classifier the same cost."""
    dense = int(np.prod(model.get_layer("logits").kernel.shape))
    return (count_flops(model) - dense) * scale**2 + dense


def scale_residual_branches(model, spec):
    """Sets each residual branch's last BN to scale the branch by 1/sqrt(blocks), through its
    moving variance. At initialisation inference BN is the identity and every block doubles the
    activations' second moment, past float32's range over ResNet-1202's 600 blocks; scaled so
    (as Fixup and SkipInit scale deep nets' branches), they grow by a factor of e at most."""
    if not spec.residual:
        return
    last = "bn3" if spec.block == "bottleneck" else "bn2"
    for layer in model.layers:
        if re.fullmatch(rf"stage\d+_block\d+_{last}", layer.name):
            variance = layer.moving_variance
            variance.assign(np.full(variance.shape, sum(spec.stage_blocks), "float32"))


def assert_reloads_equal(model, x, tmp_path):
    """Saved as .keras and loaded in safe mode, `model` has the same weights (BN statistics
    moved by a training step first, so those count too) and outputs on `x`, as keras-hub's
    saving test."""
    model(x, training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    clone = untrusted.load_keras_model(str(path))  # safe mode, and deep enough for ResNet-1202
    assert [w.path for w in clone.weights] == [w.path for w in model.weights]
    for theirs, ours in zip(clone.weights, model.weights, strict=True):
        np.testing.assert_array_equal(_numpy(theirs), _numpy(ours))
    np.testing.assert_allclose(_numpy(clone(x)), _numpy(model(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in specs.listed_names()],
)
def test_every_named_model(name, tmp_path):
    """Every row of the table: built at a tiny input, it runs forward, has the paper's counts,
    reloads from a .keras file to the same outputs, and computes in bfloat16 under mixed
    precision to within bfloat16's rounding."""
    spec = specs.get_spec(name)
    shape, scale = TINY[spec.family]
    kwargs = dict(input_shape=shape, stride_placement="v1", classifier_activation=None)
    model = build_model(name, **kwargs)
    assert model.name == name
    params, macs = count_params(model), paper_multiply_adds(model, scale)
    assert (params, macs) == TABLE[name]
    if name in TABLE6_MILLIONS:
        decimals = len(TABLE6_MILLIONS[name].split(".")[1])
        assert f"{params / 1e6:.{decimals}f}" == TABLE6_MILLIONS[name]
    if name in TABLE1_GMACS:
        assert macs / 1e9 == pytest.approx(TABLE1_GMACS[name], rel=0.05)

    x = _images(shape)
    scale_residual_branches(model, spec)
    logits = _numpy(model(x))
    assert logits.shape == (2, spec.default_num_classes) and np.isfinite(logits).all()
    assert_reloads_equal(model, x, tmp_path)

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_model(name, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(model.get_weights())
    assert mixed.get_layer("stem_conv").compute_dtype == "bfloat16"
    expected, got = _numpy(model(x)), _numpy(mixed(x))
    assert got.dtype == np.float32  # the "predictions" layer computes in float32
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()  # 8 bits of mantissa


def test_the_readme_table_is_the_pinned_one():
    """README.md shows `tfresnet models`' table: the counts pinned above."""
    readme = repo_file("README.md").read_text()
    for name, (params, macs) in TABLE.items():
        spec = specs.get_spec(name)
        cells = [name, spec.depth, spec.default_shortcut, f"{params:,}", f"{macs / 1e9:.3g}G"]
        row = "| " + " | ".join(map(str, cells)) + " |"
        assert row in readme, f"README.md lacks {row}"


@pytest.mark.parametrize(
    "name, small",
    [
        ("resnet8", 8),
        ("imagenet:block=bottleneck;stage_blocks=1,1,1,1;stage_filters=4,8,16,32", 32),
    ],
)
def test_multiply_adds_scale_from_the_tiny_input_exactly(name, small):
    """The harness' counts at the paper's input, from its tiny one, are the counts there."""
    spec = specs.resolve_spec(name)
    big = spec.default_input_shape
    at_small = build_model(name, input_shape=(small, small, 3))
    assert paper_multiply_adds(at_small, big[0] // small) == count_flops(build_model(name))


@pytest.mark.parametrize("shortcut, params", [("A", 21_623_848), ("C", 22_716_840)])
def test_shortcut_options_of_table3(shortcut, params):
    """ResNet-34 with option A (zero-padding, no weights: plain34's count) and C (a projection
    on every block); B is the table's."""
    model = build_model("resnet34", input_shape=(32, 32, 3), shortcut=shortcut)
    assert count_params(model) == params


def test_v15_strides_cost_more_than_the_papers_v1():
    """The default v1.5 (stride on the 3x3) costs 4.09G multiply-adds for ResNet-50, v1 3.86G;
    the weights are the same (torchvision's count)."""
    model = build_model("resnet50", input_shape=(32, 32, 3))
    assert paper_multiply_adds(model, 7) / 1e9 == pytest.approx(4.09, rel=0.01)
    assert count_params(model) == TABLE["resnet50"][0]


def test_plain_net_has_the_residual_nets_layers_minus_shortcuts():
    plain = build_model("plain20")
    res = build_model("resnet20")
    assert count_params(plain) == count_params(res)
    kinds = lambda m: sorted(type(layer).__name__ for layer in m.layers)  # noqa: E731
    assert [k for k in kinds(res) if k not in ("Add", "ZeroPadShortcut")] == kinds(plain)


def test_family_defaults_and_layer_names():
    cifar = build_model("resnet20")
    assert cifar.input_shape == (None, 32, 32, 3) and cifar.output_shape == (None, 10)
    assert cifar.get_layer("stage2_block1_shortcut_pad").filters == 32
    assert cifar.get_layer("stage3_block3_conv2").filters == 64
    imagenet = build_model("resnet18")
    assert imagenet.input_shape == (None, 224, 224, 3) and imagenet.output_shape == (None, 1000)
    assert imagenet.get_layer("stage2_block1_shortcut_conv").filters == 128
    assert imagenet.get_layer("stem_conv").kernel_size == (7, 7)


def test_any_6n_plus_2_depth_is_accepted():
    model = build_model("resnet14", input_shape=(8, 8, 1))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) + 1 == 14


def test_pixel_standardisation_is_inside_the_model():
    mean = np.full((8, 8, 1), 3.0, "float32")
    model = build_model("cifar_resnet8", input_shape=(8, 8, 1), pixel_mean=mean, pixel_std=2.0)
    norm = model.get_layer("standardize")
    y = keras.ops.convert_to_numpy(norm(np.full((1, 8, 8, 1), 7.0, "float32")))
    np.testing.assert_allclose(y, 2.0, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet21"}, "CIFAR-style depth must be 6n\\+2"),
        ({"name": "vgg16"}, "Unknown model name 'vgg16'. Allowed: resnet<d>/plain<d>"),
        ({"name": "resnet20", "shortcut": "D"}, "Unknown shortcut 'D'; allowed: A, B, C, none"),
        ({"name": "plain20", "shortcut": "A"}, "plain network; it takes shortcut='none'"),
        ({"name": "resnet18", "input_shape": (16, 16, 3)}, "too small for resnet18"),
        ({"name": "resnet20", "input_shape": (2, 2, 3)}, "at least 4"),
        ({"name": "resnet20", "input_shape": (8, 8)}, "\\(height, width, channels\\)"),
        ({"name": "resnet20", "num_classes": 0}, "num_classes must be >= 1"),
        ({"name": "resnet50", "stride_placement": "v2"}, "allowed: v1, v1.5"),
        ({"name": "resnet20", "weight_decay": -1.0}, "weight_decay must be a number >= 0"),
        ({"name": "resnet20", "weight_decay": float("nan")}, "weight_decay must be a number"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


# --- heads: keras.applications' include_top / pooling / classifier_activation / input_tensor ---


@pytest.mark.parametrize(
    "kwargs, output_shape, last_layer",
    [
        ({}, (None, 10), "predictions"),
        ({"pooling": "avg"}, (None, 10), "predictions"),  # what the top does anyway
        ({"include_top": False}, (None, 2, 2, 64), "stage3_block1_out"),
        ({"include_top": False, "pooling": "avg"}, (None, 64), "avg_pool"),
        ({"include_top": False, "pooling": "max"}, (None, 64), "max_pool"),
        ({"include_top": False, "preact": True}, (None, 2, 2, 64), "post_relu"),
    ],
)
def test_heads_follow_keras_applications(kwargs, output_shape, last_layer):
    model = build_model("resnet8", input_shape=(8, 8, 3), **kwargs)
    assert model.output_shape == output_shape
    assert model.layers[-1].name == last_layer


def test_headless_model_is_the_classifier_minus_its_dense_layer():
    full = build_model("resnet20")
    headless = build_model("resnet20", include_top=False, pooling="avg")
    assert count_params(full) - count_params(headless) == 64 * 10 + 10
    assert [layer.name for layer in headless.layers] == [layer.name for layer in full.layers][:-2]


def test_classifier_activation_none_gives_float32_logits():
    model = build_model("resnet8", input_shape=(8, 8, 3), classifier_activation=None)
    x = _images()
    logits = keras.Model(model.input, model.get_layer("logits").output)
    np.testing.assert_allclose(_numpy(model(x)), _numpy(logits(x)), rtol=1e-6)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    sigmoid = build_model("resnet8", input_shape=(8, 8, 3), classifier_activation="sigmoid")
    assert sigmoid.get_layer("predictions").activation is keras.activations.sigmoid


def test_input_tensor_attaches_the_net_to_an_existing_graph():
    images = keras.Input((8, 8, 3), name="raw")
    scaled = keras.layers.Rescaling(1 / 255, name="scale")(images)
    model = build_model("resnet8", input_tensor=scaled, include_top=False, pooling="avg")
    assert model.inputs == [images] and model.input_shape == (None, 8, 8, 3)
    assert model.get_layer("scale") is not None
    # The net is now part of the user's graph: its output feeds the user's layers.
    outputs = keras.layers.Dense(3, name="my_head")(model.output)
    combined = keras.Model(images, outputs)
    assert combined.output_shape == (None, 3)
    assert len(combined.layers) == len(model.layers) + 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"include_top": "yes"}, "include_top must be True or False; got 'yes'"),
        ({"pooling": "mean"}, "Unknown pooling 'mean'; allowed: None, avg, max"),
        (
            {"classifier_activation": "sofmax"},
            "Could not interpret activation function identifier: sofmax",
        ),
        ({"pooling": "max"}, "pooling='max' applies only with include_top=False"),
        ({"include_top": False, "num_classes": 5}, "num_classes=5 and .* only with include_top"),
        ({"include_top": False, "classifier_activation": None}, "only with include_top=True"),
        ({"input_tensor": np.zeros((1, 8, 8, 3))}, "input_tensor must be a 4D Keras tensor"),
        ({"input_tensor": keras.Input((8, 8))}, "input_tensor must be a 4D Keras tensor"),
        (
            {"input_tensor": keras.Input((8, 8, 3)), "input_shape": (16, 16, 3)},
            "input_shape \\(16, 16, 3\\) differs from input_tensor's shape \\(8, 8, 3\\)",
        ),
    ],
)
def test_bad_head_arguments_raise_clear_errors(kwargs, message):
    kwargs.setdefault("input_shape", None if "input_tensor" in kwargs else (8, 8, 3))
    with pytest.raises(ValueError, match=message):
        build_model("resnet8", **kwargs)


# --- custom specs: nets that are not in the table ----------------------------------------------


def test_custom_spec_parameter_count():
    """Wide CIFAR net, one block per stage: every conv and BN counted by hand."""
    spec = specs.get_spec("resnet8").widened(2)
    wide = specs.ResNetSpec("cifar", "basic", (1, 1, 1), stage_filters=(32, 64, 128))
    assert spec == dataclasses.replace(wide, stem_filters=16)  # Wide ResNets keep the stem
    stem = 9 * 3 * 16 + 2 * 16
    blocks = [9 * 16 * 32 + 9 * 32 * 32, 9 * 32 * 64 + 9 * 64 * 64, 9 * 64 * 128 + 9 * 128 * 128]
    bns = 2 * 2 * (32 + 64 + 128)
    assert count_params(build_model(spec)) == stem + sum(blocks) + bns + 128 * 10 + 10


def test_a_net_too_big_for_memory_is_refused_before_building():
    message = r"'resnet20:width_multiplier=100000' \(its float32 weights alone\) needs at least "
    with pytest.raises(ValueError, match=message + r"9,870,530 GiB of memory, more than this"):
        build_model("resnet20:width_multiplier=100000")
    with pytest.raises(ValueError, match=r"needs at least 9.8e396 GiB of memory"):
        models.backbone("resnet20:width_multiplier=1e200")


# Options the table does not use and networks outside it: (name or spec, build_model kwargs).
VARIANTS = {
    "preact_C": ("cifar_resnet8", {"shortcut": "C", "preact": True}),
    "bottleneck_A": (
        "imagenet:block=bottleneck;stage_blocks=1,1,1,1;stage_filters=8,16,32,64",
        {"shortcut": "A"},
    ),
    "wide": (specs.ResNetSpec("cifar", "basic", (1, 1, 1), stage_filters=(32, 64, 128)), {}),
    "depths": (specs.ResNetSpec("cifar", "basic", (1, 2)), {}),
    "imagenet_stem": (specs.ResNetSpec("cifar", "basic", (1, 1, 1), stem="imagenet"), {}),
    "bottleneck": (specs.ResNetSpec("imagenet", "bottleneck", (1, 1), stage_filters=(8, 16)), {}),
}


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_variants_round_trip_through_keras_files_and_spec_data(tmp_path, key):
    """Pre-activation, shortcuts A on bottlenecks and C, standardisation inside the model and
    custom specs reload from .keras files equal; a spec comes back from JSON and its string."""
    name, kwargs = VARIANTS[key]
    spec = specs.resolve_spec(name)
    shape = (max(8, spec.min_input_size),) * 2 + (3,)
    mean = np.full(shape, 0.5)
    model = build_model(name, input_shape=shape, num_classes=3, pixel_mean=mean, pixel_std=2.0,
                        **kwargs)  # fmt: skip
    if isinstance(name, specs.ResNetSpec):
        assert model.name == f"custom_resnet{spec.depth}"
    assert_reloads_equal(model, _images(shape), tmp_path)
    as_json = json.loads(json.dumps(dataclasses.asdict(spec)))
    assert specs.resolve_spec(as_json) == specs.resolve_spec(spec.to_string()) == spec


def test_custom_spec_stem_and_strides():
    spec = VARIANTS["imagenet_stem"][0]
    model = build_model(spec, input_shape=(16, 16, 3))
    assert model.get_layer("stem_conv").kernel_size == (7, 7)
    assert model.get_layer("stage3_block1_out").output.shape == (None, 1, 1, 64)
    assert spec.min_input_size == 16 and spec.feature_strides["stage3"] == 16
    with pytest.raises(ValueError, match="too small for custom_resnet8.* at least 16"):
        build_model(spec, input_shape=(8, 8, 3))


@pytest.mark.slow  # a fresh interpreter; test_backends checks the registration
def test_loading_needs_only_import_tfresnet(tmp_path):
    """A fresh interpreter that imports tfresnet (and nothing from it) loads in safe mode."""
    assert keras.saving.get_registered_name(layers.ZeroPadShortcut) == "tfresnet>ZeroPadShortcut"
    bn_name = keras.saving.get_registered_name(layers.BatchNormalization)
    assert bn_name == "tfresnet>BatchNormalization"
    path = tmp_path / "wide.keras"
    build_model("resnet8:width_multiplier=2", input_shape=(8, 8, 3)).save(path)
    script = (
        "import keras, tfresnet; "
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True); "
        "print(m.name, m.get_layer('stage3_block1_conv2').filters)"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split()[-2:] == ["custom_resnet8", "128"]


@pytest.mark.parametrize("module", [models, specs, blocks, pretrained, shipped])
def test_module_docstring_examples_run(module):
    failures, tried = doctest.testmod(module)
    with open(module.__file__) as f:
        written = f.read().count(">>> ")
    assert (failures, tried) == (0, written) and written >= 1  # every example ran, and passed
