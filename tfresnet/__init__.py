"""tfresnet: deep residual networks (He et al. 2015) for Keras 3 / TensorFlow.

`import tfresnet` registers the two custom layers with Keras (so `.keras` files load in safe
mode); the public names below load their module on first use. One process is the exception:
the `tfresnet` command imports this package before it can set TensorFlow's log environment
(`tfresnet.cli.run`), so there Keras, and with it TensorFlow, is left for the command to load.
"""

import importlib
import os
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


def _started_as_the_command():
    """Whether this process is `tfresnet ...`, `python -m tfresnet.cli ...`, Bazel's binary or a
    program of a clone's benchmarks/ (`python -m benchmarks.NAME`, see benchmarks/__init__.py):
    each sets TensorFlow's log environment before loading Keras. Nothing is imported from there."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).removesuffix(".exe") == "tfresnet":  # the console script
        return True
    if argv0.endswith(os.path.join("tfresnet", "cli", "__main__.py")):
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(
        a == "-m" and (b == "tfresnet.cli" or b.startswith("benchmarks."))
        for a, b in zip(argv, argv[1:], strict=False)
    )


if not _started_as_the_command():
    from tfresnet import layers  # noqa: F401 -- registers tfresnet>BatchNormalization, ...
