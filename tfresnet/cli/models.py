"""`tfresnet models`: the model table (`models.model_table`, `models.format_table`)."""

from absl import flags

from tfresnet import models


def define_flags(fv):
    flags.DEFINE_list("names", None, "Models to list; default the paper's.", flag_values=fv)


def run(fv, args):
    print(models.format_table(models.model_table(fv.names or None)))
    print(
        "\nCIFAR nets at 32x32x3 with 10 classes; ImageNet nets at 224x224x3 with 1000 classes "
        "and v1 (paper) bottleneck strides; params are trainable weights."
    )
    return 0
