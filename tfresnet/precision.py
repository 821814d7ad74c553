"""Which Keras dtype policy to train in: a name, or "auto" for the fastest the hardware runs well.

"auto" picks mixed_bfloat16 on TPUs, on GPUs of compute capability 8.0+ and on CPUs with
bfloat16 instructions (AVX512_BF16 or AMX-BF16: 1.4-1.7x faster ResNet training than float32
on the benchmark machine, docs/performance.md); mixed_float16 on GPUs of capability 7.x (Keras
adds dynamic loss scaling to the optimizer for it); float32 everywhere else. bfloat16 keeps
float32's exponent range, so it needs no loss scaling; in both mixed policies variables, BN
statistics and the softmax stay float32.
"""

import contextlib

import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check(precision):
    """Raise ValueError, with the allowed names, unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}.")


def resolve(precision, strategy=None):
    """The Keras policy name `precision` stands for ("auto" is decided for this machine)."""
    check(precision)
    if precision != "auto":
        return precision
    import tensorflow as tf

    from tfresnet import distribute

    if strategy is not None and distribute.is_tpu(strategy):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return gpu_precision(tf.config.experimental.get_device_details(gpus[0]))
    return "mixed_bfloat16" if cpu_has_bfloat16() else "float32"


def gpu_precision(details):
    """Policy for a GPU from `tf.config.experimental.get_device_details` (compute capability)."""
    major, _ = details.get("compute_capability", (0, 0))
    if major >= 8:
        return "mixed_bfloat16"
    return "mixed_float16" if major >= 7 else "float32"


def cpu_has_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU has bfloat16 dot-product instructions (Linux; False where unknown)."""
    from tfresnet.machine import cpu_info

    return any(flag in cpu_info(cpuinfo).flags for flag in CPU_BF16_FLAGS)


@contextlib.contextmanager
def policy_scope(precision, strategy=None):
    """Keras' global dtype policy set for `precision` inside the block (yields its name), restored
    after it: a mixed-precision run leaves later `build_model` calls in the policy they had."""
    before = keras.mixed_precision.global_policy()
    name = resolve(precision, strategy)
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(before)
