import dataclasses
import doctest
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfresnet import layers, models, specs
from tfresnet.models import build_model, count_flops, count_params


def _tiny_shape(name):
    return (8, 8, 3) if specs.get_spec(name).family == "cifar" else (32, 32, 3)


BIG = ("resnet101", "resnet152", "resnet200")  # seconds each; resnet50 covers their blocks


def _slow_if_big(name, *values):
    """A parametrize case for model `name`, marked slow if the model is one of BIG."""
    return pytest.param(name, *values, marks=pytest.mark.slow if name in BIG else ())


FORWARD_NAMES = [_slow_if_big(n) for n in specs.listed_names() if n != "resnet1202"]


@pytest.mark.parametrize("name", FORWARD_NAMES)
def test_every_listed_model_builds_and_runs_forward(name):
    model = build_model(name, num_classes=7, input_shape=_tiny_shape(name))
    x = np.random.default_rng(0).uniform(size=(2, *_tiny_shape(name))).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert model.name == name


@pytest.mark.parametrize(
    "name, kwargs, params",
    [
        ("resnet20", {}, 269_722),
        ("resnet56", {}, 853_018),
        ("resnet110", {}, 1_727_962),
        ("resnet18", {}, 11_689_512),
        ("resnet50", {}, 25_557_032),
        ("resnet34", {"shortcut": "A"}, 21_623_848),
        ("resnet34", {"shortcut": "B"}, 21_797_672),
        ("resnet34", {"shortcut": "C"}, 22_716_840),
        ("plain34", {}, 21_623_848),
    ],
)
def test_parameter_counts_match_paper_and_torchvision(name, kwargs, params):
    assert count_params(build_model(name, **kwargs)) == params


@pytest.mark.parametrize(
    "name, millions, digits",
    [
        ("resnet32", 0.46, 2),
        ("resnet44", 0.66, 2),
        pytest.param("resnet1202", 19.4, 1, marks=pytest.mark.slow),  # 2,400 layers: ~15-45 s
    ],
)
def test_cifar_parameter_counts_match_table6(name, millions, digits):
    """Table 6 prints millions rounded to its own precision; the counts must round the same."""
    assert round(count_params(build_model(name)) / 1e6, digits) == millions


@pytest.mark.parametrize(
    "name, gmacs",
    [
        _slow_if_big(name, gmacs)
        for name, gmacs in [
            ("resnet18", 1.8),
            ("resnet34", 3.6),
            ("resnet50", 3.8),
            ("resnet101", 7.6),
            ("resnet152", 11.3),
        ]
    ],
)
def test_multiply_adds_match_table1(name, gmacs):
    flops = count_flops(build_model(name, stride_placement="v1"))
    assert flops / 1e9 == pytest.approx(gmacs, rel=0.05)


def test_cifar_resnet20_multiply_adds_and_v15_cost():
    assert count_flops(build_model("resnet20")) / 1e6 == pytest.approx(41, rel=0.02)
    v15 = count_flops(build_model("resnet50"))
    assert v15 / 1e9 == pytest.approx(4.09, rel=0.01)  # strided 3x3 costs more than the paper's v1


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


def test_cifar_family_forced_for_imagenet_depths():
    spec = specs.get_spec("cifar_resnet50")
    assert (spec.family, spec.stage_blocks) == ("cifar", (8, 8, 8))
    assert specs.get_spec("resnet50").family == "imagenet"


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
    "kwargs",
    [
        {"name": "cifar_resnet8"},
        {"name": "cifar_plain8"},
        {"name": "cifar_resnet8", "shortcut": "C", "preact": True},
        {"name": "resnet18", "input_shape": (32, 32, 3)},
        {"name": "resnet50", "input_shape": (32, 32, 3), "shortcut": "A"},
    ],
)
def test_save_reload_gives_equal_outputs_in_safe_mode(tmp_path, kwargs):
    kwargs.setdefault("input_shape", (8, 8, 3))
    model = build_model(**kwargs, pixel_mean=np.zeros(kwargs["input_shape"]), pixel_std=1.0)
    path = tmp_path / "model.keras"
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).uniform(size=(2, *kwargs["input_shape"])).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


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


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _images(shape=(8, 8, 3), batch=2, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, *shape)).astype("float32")


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
        ({"classifier_activation": "sofmax"}, "Unknown classifier_activation 'sofmax'"),
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


def test_min_weights_counts_the_stages_conv_kernels():
    """The pre-build bound is every stage conv's kernel, by hand, and below the built count."""
    wide = specs.get_spec("resnet8").widened(2)
    assert wide.min_weights() == 9 * (16 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128**2)
    bottleneck = specs.ResNetSpec("imagenet", "bottleneck", (1, 2), stage_filters=(8, 16))
    stage1 = 8 * 8 + 9 * 8 * 8 + 8 * 32  # 1x1 from the stem's 8, 3x3, 1x1 to 4 * 8
    stage2 = (32 * 16 + 9 * 16 * 16 + 16 * 64) + (64 * 16 + 9 * 16 * 16 + 16 * 64)
    assert bottleneck.min_weights() == stage1 + stage2
    assert specs.get_spec("resnet20").min_weights() == 267_264  # of 269,722
    assert specs.get_spec("resnet50").min_weights() <= 25_557_032


def test_a_net_too_big_for_memory_is_refused_before_building():
    message = r"'resnet20:width_multiplier=100000' \(its float32 weights alone\) needs at least "
    with pytest.raises(ValueError, match=message + r"9,870,530 GiB of memory, more than this"):
        build_model("resnet20:width_multiplier=100000")
    with pytest.raises(ValueError, match=r"needs at least 9.8e396 GiB of memory"):
        models.backbone("resnet20:width_multiplier=1e200")


CUSTOM_SPECS = {
    "wide": specs.ResNetSpec("cifar", "basic", (1, 1, 1), stage_filters=(32, 64, 128)),
    "depths": specs.ResNetSpec("cifar", "basic", (1, 2)),
    "imagenet_stem": specs.ResNetSpec("cifar", "basic", (1, 1, 1), stem="imagenet"),
    "bottleneck": specs.ResNetSpec("imagenet", "bottleneck", (1, 1), stage_filters=(8, 16)),
}


@pytest.mark.parametrize("key", sorted(CUSTOM_SPECS))
def test_custom_spec_builds_and_round_trips_through_keras_files(tmp_path, key):
    spec = CUSTOM_SPECS[key]
    shape = (16, 16, 3)
    model = build_model(spec, input_shape=shape, num_classes=3)
    assert model.name == f"custom_resnet{spec.depth}"
    x = _images(shape)
    model(x, training=True)  # move BN statistics away from their initial values
    path = tmp_path / "custom.keras"
    model.save(path)
    clone = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(_numpy(clone(x)), _numpy(model(x)), atol=1e-6)
    # The same network again from its spec as data: a dict, JSON, a spec string.
    as_json = json.loads(json.dumps(dataclasses.asdict(spec)))
    for again in (as_json, spec.to_string()):
        assert specs.resolve_spec(again) == spec
        assert count_params(build_model(again, input_shape=shape, num_classes=3)) == count_params(
            model
        )


def test_custom_spec_stem_and_strides():
    spec = CUSTOM_SPECS["imagenet_stem"]
    model = build_model(spec, input_shape=(16, 16, 3))
    assert model.get_layer("stem_conv").kernel_size == (7, 7)
    assert model.get_layer("stage3_block1_out").output.shape == (None, 1, 1, 64)
    assert spec.min_input_size == 16 and spec.feature_strides["stage3"] == 16
    with pytest.raises(ValueError, match="too small for custom_resnet8.* at least 16"):
        build_model(spec, input_shape=(8, 8, 3))


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


@pytest.mark.parametrize(
    "text, expected",
    [
        ("resnet20", specs.cifar_spec(3)),
        ("ResNet20", specs.cifar_spec(3)),
        ("resnet20:width_multiplier=4", specs.cifar_spec(3).widened(4)),
        ("plain20:stage_blocks=1,2,3", specs.ResNetSpec("cifar", "basic", (1, 2, 3), False)),
        ("resnet50:stage_blocks=3,4,6", specs.ResNetSpec("imagenet", "bottleneck", (3, 4, 6))),
        (
            "cifar:stage_blocks=2,2;stem=imagenet;stem_filters=8;residual=false",
            specs.ResNetSpec("cifar", "basic", (2, 2), False, stem="imagenet", stem_filters=8),
        ),
        (
            "imagenet: block=bottleneck; stage_blocks=1,1,1,1; stage_filters=8,16,32,64",
            specs.ResNetSpec("imagenet", "bottleneck", (1,) * 4, stage_filters=(8, 16, 32, 64)),
        ),
    ],
)
def test_parse_model_spec_strings(text, expected):
    spec = specs.parse_model(text)
    assert spec == expected
    assert specs.parse_model(spec.to_string()) == spec


def test_table_specs_keep_their_names():
    for name in specs.listed_names() + ["cifar_resnet50", "resnet8"]:
        assert specs.get_spec(name).to_string() == name
        assert specs.parse_model(name) == specs.get_spec(name)


@pytest.mark.parametrize(
    "name, message",
    [
        ("cifar", "needs stage_blocks"),
        ("resnet20:depth=3", "'depth=3' in model spec 'resnet20:depth=3' is not key=value"),
        ("resnet20:stage_blocks", "'stage_blocks' in model spec .* is not key=value"),
        ("resnet20:stage_blocks=1;stage_blocks=2", "is given twice"),
        ("resnet20:stage_blocks=a,b", "stage_blocks='a,b' in model spec .* not a valid ints"),
        ("resnet20:residual=maybe", "residual='maybe' .* not a valid bool"),
        ("resnet20:width_multiplier=0", "width multiplier must be a number > 0; got 0.0"),
        ("resnet20:width_multiplier=1e308", "width multiplier 1e\\+308 makes the filter counts"),
        ("cifar:stage_blocks=2,2;stage_filters=8", "stage_filters \\(8,\\) has 1 entries but"),
        ("resnet20:block=wide", "Unknown block 'wide'; allowed: basic, bottleneck"),
        ("resnet20:stem=big", "Unknown stem 'big'; allowed: cifar, imagenet"),
        ("vgg:stage_blocks=1", "Unknown model name 'vgg'"),
        (specs.ResNetSpec("cifar", "basic", (1, 1, 1)), None),
        ({"family": "cifar", "stage_blocks": (1,), "depth": 8}, "Unknown ResNetSpec field"),
        ({"family": "mnist", "block": "basic", "stage_blocks": [1]}, "Unknown family 'mnist'"),
        ({"family": "cifar", "block": "basic", "stage_blocks": [0]}, "stage_blocks must be"),
        ({"family": "cifar", "block": "basic", "stage_blocks": (1,), "residual": 1}, "residual"),
        (20, "A model is a name or spec string, a ResNetSpec or a dict"),
    ],
)
def test_bad_specs_raise_clear_errors(name, message):
    if message is None:
        assert specs.resolve_spec(name) is name
        return
    with pytest.raises(ValueError, match=message):
        specs.resolve_spec(name)


def test_module_docstring_examples_run():
    for module in (models, specs):
        failures, tried = doctest.testmod(module)
        assert tried >= 2 and failures == 0
