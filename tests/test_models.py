import keras
import numpy as np
import pytest

from tfresnet import models
from tfresnet.models import build_model, count_flops, count_params


def _tiny_shape(name):
    return (8, 8, 3) if models.get_spec(name).family == "cifar" else (32, 32, 3)


FORWARD_NAMES = [n for n in models.listed_names() if n != "resnet1202"]


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
        ("resnet18", 1.8),
        ("resnet34", 3.6),
        ("resnet50", 3.8),
        ("resnet101", 7.6),
        ("resnet152", 11.3),
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
    spec = models.get_spec("cifar_resnet50")
    assert (spec.family, spec.stage_blocks) == ("cifar", (8, 8, 8))
    assert models.get_spec("resnet50").family == "imagenet"


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
        ({"name": "resnet20", "weight_decay": -1.0}, "weight_decay must be >= 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


def test_model_table_command_prints_counts(capsys):
    assert models.main(["--list", "resnet20", "plain20"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | 20 | A | 269,722 | 0.0406G |" in out
    assert "| plain20 | 20 | none | 269,722 |" in out
    assert models.main([]) == 2
