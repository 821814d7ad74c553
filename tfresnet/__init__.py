"""tfresnet: deep residual networks (He et al. 2015) for Keras 3 / TensorFlow."""

from tfresnet.blocks import ConvSettings, basic_block, bottleneck_block, residual_unit
from tfresnet.inference import fold_batch_norm
from tfresnet.models import build_model, count_flops, count_params, get_spec, listed_names

__version__ = "0.1.0"
__all__ = [
    "ConvSettings",
    "basic_block",
    "bottleneck_block",
    "build_model",
    "fold_batch_norm",
    "count_flops",
    "count_params",
    "get_spec",
    "listed_names",
    "residual_unit",
]
