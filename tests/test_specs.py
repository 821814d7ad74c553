"""The spec table and spec strings: names, parsing, validation; no model is built."""

import dataclasses

import numpy as np
import pytest

from tfresnet import specs


def test_cifar_family_forced_for_imagenet_depths():
    spec = specs.get_spec("cifar_resnet50")
    assert (spec.family, spec.stage_blocks) == ("cifar", (8, 8, 8))
    assert specs.get_spec("resnet50").family == "imagenet"


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


@pytest.mark.parametrize(
    "text, expected",
    [
        ("resnet20", specs.ResNetSpec("cifar", "basic", (3, 3, 3))),
        ("ResNet20", specs.ResNetSpec("cifar", "basic", (3, 3, 3))),
        ("resnet20:width_multiplier=4", specs.get_spec("resnet20").widened(4)),
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


def test_names_are_read_as_the_table_spells_them():
    assert specs.canonical_name(" ResNet20") == "resnet20"
    assert specs.canonical_name("CIFAR_plain8") == "cifar_plain8"
    assert specs.canonical_name("resnet20:width_multiplier=2") is None
    assert specs.canonical_name("cifar") is None


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
        (
            {"family": "cifar", "stage_blocks": (1,), "depth": 8},
            "'depth' is not a ResNetSpec setting; allowed: family, block",
        ),
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


def test_a_dict_of_numpy_scalars_is_a_spec():
    spec = specs.get_spec("resnet20")
    fields = {k: np.int64(v) if type(v) is int else v for k, v in dataclasses.asdict(spec).items()}
    fields["residual"] = np.bool_(True)
    assert specs.resolve_spec(fields) == spec
