"""The few custom layers tfresnet needs, each registered so `.keras` files load in safe mode:
the option-A `ZeroPadShortcut`, a `BatchNormalization` on TF's fused kernel, and the fast
recipe's label-smoothed `SparseCrossentropy`."""

import keras
from keras import ops

# Torch/Caffe-style BN settings used by the paper's implementations (Keras defaults are 0.99/1e-3).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tfresnet")
class ZeroPadShortcut(keras.layers.Layer):
    """Option-A shortcut (paper Sec. 3.3): identity, subsampled by `strides`, with zero channels
    appended up to `filters`; no parameters."""

    def __init__(self, filters: int, strides: int = 1, **kwargs):
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
                f"ZeroPadShortcut (option A) can only grow channels: input has {channels}, "
                f"filters={self.filters}; use shortcut 'B' or 'C'."
            )

    def call(self, inputs):
        x = inputs
        if self.strides > 1:
            # Subsampling as a 1x1 max-pool: the same values as x[:, ::s, ::s], but oneDNN's
            # pooling kernels (forward and gradient) are ~3x faster than a strided slice.
            x = ops.max_pool(x, pool_size=1, strides=self.strides, padding="valid")
        extra = self.filters - x.shape[-1]
        if extra == 0:
            return x
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


# Activation dtypes TF's fused batch-norm kernels take (scale, offset and statistics stay float32).
FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package="tfresnet")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TF's fused kernel (FusedBatchNormV3).

    Keras 3 builds BN from separate ops, slower (docs/performance.md). Under the TF
    backend, 4D channels-last inputs without sync BN, renorm or masks take one fused op;
    anything else takes Keras' own path, the reference this layer is tested against. The class
    keeps Keras' name: `.weights.h5` files address layers by class name.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused_call(inputs, bool(training and self.trainable))

    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES
        )

    def _fused_call(self, inputs, training):
        import tensorflow as tf  # only reached under the TensorFlow backend

        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones([channels])
        offset = self.beta if self.center else tf.zeros([channels])
        if training:
            mean, variance = tf.constant([]), tf.constant([])
        else:
            mean, variance = self.moving_mean, self.moving_variance
        outputs, batch_mean, batch_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=scale,
            offset=offset,
            mean=mean,
            variance=variance,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=training,
        )
        if training:
            self._update_moving_statistics(inputs, batch_mean, batch_variance)
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, inputs, mean, unbiased_variance):
        """Keras' momentum update; the fused kernel's Bessel-corrected variance is undone, as
        Keras averages the plain (population) variance."""
        import tensorflow as tf

        count = tf.reduce_prod(tf.cast(tf.shape(inputs)[:-1], "float32"))
        variance = unbiased_variance * (tf.maximum(count - 1.0, 0.0) / count)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))


def with_keras_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` on Keras' own BatchNormalization, same weights: the reference the fused
    layer is tested against, loadable where tfresnet is not installed."""

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="tfresnet")
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against probabilities, with label smoothing: the target
    is (1 - label_smoothing) * one_hot(label) + label_smoothing / classes.

    Keras 3.15's `SparseCategoricalCrossentropy` has no `label_smoothing` (added upstream by
    keras-team/keras#23488, issue #23487); here the labels are made one-hot and handed to
    Keras' `categorical_crossentropy`, which smooths them. Registered (and so here, where every
    model load imports it) because the compiled loss is saved inside each `.keras` file.
    """

    def __init__(
        self,
        label_smoothing=0.0,
        name="sparse_categorical_crossentropy",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):  # labels of shape (batch, 1)
            y_true = ops.squeeze(y_true, axis=-1)
        target = ops.one_hot(y_true, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            target, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
