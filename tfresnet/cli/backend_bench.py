"""`python -m tfresnet.cli.backend_bench [flags]`: `backend_bench.run(BackendBenchConfig(...))`.

Not a `tfresnet` subcommand: it runs under JAX and PyTorch too, in environments without
TensorFlow, which the other commands import. Under TensorFlow its native log lines are hidden
as the `tfresnet` commands hide them (`--verbose_logs` shows them).

    KERAS_BACKEND=jax python -m tfresnet.cli.backend_bench --model=resnet50 --batch_size=256
"""

import dataclasses
import sys

from absl import flags

from tfresnet.cli import native_logs


def define_flags(fv):
    """Defaults from `backend_bench.BackendBenchConfig`."""
    from tfresnet import backend_bench  # Keras, and its backend: after the log set-up

    d = {f.name: f.default for f in dataclasses.fields(backend_bench.BackendBenchConfig)}
    flags.DEFINE_string("model", d["model"], "Model name or spec string.", flag_values=fv)
    flags.DEFINE_integer("image_size", d["image_size"], "Input height and width.", flag_values=fv)
    flags.DEFINE_integer("batch_size", d["batch_size"], "Batch size.", flag_values=fv)
    flags.DEFINE_enum(
        "precision", d["precision"], backend_bench.PRECISIONS, "Dtype policy.", flag_values=fv
    )
    flags.DEFINE_integer("steps", d["steps"], "Steps per timed epoch.", flag_values=fv)
    flags.DEFINE_integer("repeats", d["repeats"], "Timed epochs; median kept.", flag_values=fv)
    flags.DEFINE_enum(
        "jit_compile",
        d["jit_compile"],
        backend_bench.JIT_COMPILE,
        "compile()'s jit_compile.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "steps_per_execution", d["steps_per_execution"], "Steps per call.", flag_values=fv
    )
    native_logs.define_flag(fv)


def config_from_flags(fv):
    from tfresnet import backend_bench

    fields = dataclasses.fields(backend_bench.BackendBenchConfig)
    return backend_bench.BackendBenchConfig(**{f.name: fv[f.name].value for f in fields})


def main(argv=None):
    """`argv` without the program name; returns the exit status (2: bad flags or settings)."""
    argv = sys.argv[1:] if argv is None else argv
    fv = flags.FlagValues()
    define_flags(fv)
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv):
        print(f"python -m tfresnet.cli.backend_bench flags:\n{fv.get_help()}")
        return 0
    try:
        stray = fv(["tfresnet.cli.backend_bench", *argv])[1:]
        if stray:
            raise ValueError(
                f"python -m tfresnet.cli.backend_bench takes flags only (--name=value); got "
                f"{' '.join(stray)!r}."
            )
        from tfresnet import backend_bench

        backend_bench.run(config_from_flags(fv))
    except (flags.Error, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 -- one line, as the tfresnet commands print
        first = (str(err).strip().splitlines() or [""])[0]
        print(f"error: {type(err).__name__}: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    level = native_logs.configure([sys.argv[0], "backend_bench", *sys.argv[1:]])
    with native_logs.filtered_stderr(level):
        from tfresnet import backend_bench  # noqa: F401 -- loads Keras with its lines filtered

        status = main()
    sys.exit(status)
