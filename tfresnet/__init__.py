"""tfresnet: deep residual networks (He et al. 2015) for Keras 3 / TensorFlow.

The public names below load their module on first use, so `import tfresnet` alone loads neither
Keras nor TensorFlow (the `tfresnet` command sets TensorFlow's log environment first). The custom
layers are registered with Keras, so `.keras` files load in safe mode, by every tfresnet module
that builds or loads a model, and by `import tfresnet` itself when Keras is already loaded.
"""

import importlib
import sys

__version__ = "0.1.0"
_MODULES = {
    "tfresnet.blocks": ("ConvSettings", "basic_block", "bottleneck_block", "residual_unit"),
    "tfresnet.inference": ("fold_batch_norm",),
    "tfresnet.models": ("backbone", "build_model", "count_flops", "count_params"),
    "tfresnet.pretrained": ("load_weights_by_name",),
    "tfresnet.specs": ("ResNetSpec", "feature_strides", "get_spec", "listed_names", "parse_model"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfresnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS})


if "keras" in sys.modules:
    from tfresnet import layers  # noqa: F401 -- registers tfresnet>BatchNormalization, ...
