"""The few custom layers tfresnet needs, each registered so `.keras` files load in safe mode.

- `ZeroPadShortcut`: the paper's option-A shortcut (subsample + zero-pad channels, no parameters).
- `batch_norm`: the one place every block gets its BatchNormalization from, with the paper's
  momentum and epsilon.
"""

import keras
from keras import ops

# Torch/Caffe-style BN settings used by the paper's implementations (Keras defaults are 0.99/1e-3).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tfresnet")
class ZeroPadShortcut(keras.layers.Layer):
    """Option-A shortcut: identity, subsampled by `strides` and zero-padded to `filters` channels.

    The paper (Sec. 3.3, option A) uses this where dimensions increase, so the shortcut adds
    no parameters. Extra channels are appended after the input channels.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.strides > 1:
            height = None if height is None else -(-height // self.strides)
            width = None if width is None else -(-width // self.strides)
        return (batch, height, width, self.filters)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels > self.filters:
            raise ValueError(
                f"ZeroPadShortcut can only grow channels: input has {channels}, "
                f"filters={self.filters}."
            )

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :] if self.strides > 1 else inputs
        extra = self.filters - x.shape[-1]
        if extra == 0:
            return x
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


def batch_norm(name, *, zero_gamma=False, synchronized=False, epsilon=BN_EPSILON):
    """BatchNormalization over channels with the paper's settings.

    `zero_gamma` starts the layer as the zero function (used on the last BN of a residual
    branch); `synchronized` averages batch statistics across replicas (sync BN).
    """
    return keras.layers.BatchNormalization(
        axis=-1,
        momentum=BN_MOMENTUM,
        epsilon=epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=synchronized,
        name=name,
    )
