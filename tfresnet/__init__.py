"""tfresnet: deep residual networks (He et al. 2015) for Keras 3 / TensorFlow.

The public names below load their module on first use: `import tfresnet` alone loads neither
Keras nor TensorFlow, so the `tfresnet` command can set TensorFlow's log environment first
(`tfresnet.cli.run`). The two custom layers are registered with Keras (so `.keras` files load
in safe mode) by any tfresnet module that builds or loads a model, and by `import tfresnet`
itself when Keras is already loaded (`import keras, tfresnet`), where it costs no import.
"""

import importlib
import sys

__version__ = "0.1.0"
_EXPORTS = {
    "ConvSettings": "tfresnet.blocks",
    "ResNetSpec": "tfresnet.specs",
    "backbone": "tfresnet.models",
    "basic_block": "tfresnet.blocks",
    "bottleneck_block": "tfresnet.blocks",
    "build_model": "tfresnet.models",
    "count_flops": "tfresnet.models",
    "count_params": "tfresnet.models",
    "feature_strides": "tfresnet.specs",
    "fold_batch_norm": "tfresnet.inference",
    "get_spec": "tfresnet.specs",
    "listed_names": "tfresnet.specs",
    "load_weights_by_name": "tfresnet.pretrained",
    "parse_model": "tfresnet.specs",
    "residual_unit": "tfresnet.blocks",
}
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
