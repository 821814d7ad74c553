"""tfresnet: deep residual networks (He et al. 2015) for Keras 3 / TensorFlow."""

from tfresnet.blocks import ConvSettings, basic_block, bottleneck_block, residual_unit
from tfresnet.inference import fold_batch_norm
from tfresnet.models import (
    ResNetSpec,
    backbone,
    build_model,
    count_flops,
    count_params,
    feature_strides,
    get_spec,
    listed_names,
    parse_model,
)
from tfresnet.pretrained import load_weights_by_name

__version__ = "0.1.0"
__all__ = [
    "ConvSettings",
    "ResNetSpec",
    "backbone",
    "basic_block",
    "bottleneck_block",
    "build_model",
    "count_flops",
    "count_params",
    "feature_strides",
    "fold_batch_norm",
    "get_spec",
    "listed_names",
    "load_weights_by_name",
    "parse_model",
    "residual_unit",
]
