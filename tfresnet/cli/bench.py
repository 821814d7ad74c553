"""`tfresnet bench`: throughput, FLOP rate and memory (`bench.run(BenchConfig(...))`)."""

import contextlib
import dataclasses
import os

from absl import flags

from tfresnet import bench, files

QUICK_MODELS = ("resnet8",)  # --quick without --models


def define_flags(fv):
    """Defaults from `bench.BenchConfig`."""
    d = {f.name: f.default for f in dataclasses.fields(bench.BenchConfig)}
    flags.DEFINE_list("models", list(d["models"]), "Models to time.", flag_values=fv)
    flags.DEFINE_list(
        "precisions",
        list(d["precisions"]),
        f"Keras dtype policies among {', '.join(bench.PRECISIONS)}.",
        flag_values=fv,
    )
    flags.DEFINE_integer("steps", d["steps"], "Timed steps/epoch; 0: per model.", flag_values=fv)
    flags.DEFINE_integer("repeats", d["repeats"], "Timed epochs; median reported.", flag_values=fv)
    flags.DEFINE_integer("image_size", d["image_size"], "0: per model.", flag_values=fv)
    flags.DEFINE_integer("batch_size", d["batch_size"], "0: per model.", flag_values=fv)
    flags.DEFINE_integer(
        "steps_per_execution", d["steps_per_execution"], "Steps per call.", flag_values=fv
    )
    flags.DEFINE_bool("jit_compile", d["jit_compile"], "Compile with XLA.", flag_values=fv)
    flags.DEFINE_enum("bn", d["bn"], bench.BN_KINDS, "BatchNormalization to use.", flag_values=fv)
    flags.DEFINE_integer("matmul_size", d["matmul_size"], "Peak matmul n.", flag_values=fv)
    flags.DEFINE_bool("pipeline", d["pipeline"], "Time the input pipeline.", flag_values=fv)
    flags.DEFINE_bool(
        "quick", d["quick"], f"Smoke mode (seconds); models {QUICK_MODELS}.", flag_values=fv
    )
    flags.DEFINE_string("output", "", "Also write the JSON lines to this file.", flag_values=fv)


def config_from_flags(fv):
    quick_models = QUICK_MODELS if fv["models"].using_default_value else fv.models
    return bench.BenchConfig(
        models=tuple(quick_models if fv.quick else fv.models),
        precisions=tuple(fv.precisions),
        steps=fv.steps,
        repeats=1 if fv.quick and fv["repeats"].using_default_value else fv.repeats,
        image_size=fv.image_size,
        batch_size=fv.batch_size,
        steps_per_execution=fv.steps_per_execution,
        jit_compile=fv.jit_compile,
        bn=fv.bn,
        matmul_size=fv.matmul_size,
        pipeline=fv.pipeline,
        quick=fv.quick,
    )


def run(fv, args):
    """Run the benchmark the flags describe; print JSON lines (and --output) and the table."""
    config = config_from_flags(fv)
    if fv.output and os.path.isdir(fv.output):
        raise ValueError(f"--output {fv.output!r} is a directory; give a file name.")
    records = []

    def measure(target=None):
        """Print each JSON line as it comes, and write it to `target` when given."""
        with open(target, "w") if target else contextlib.nullcontext() as out:

            def emit(line):
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()

            # Each model runs in a fresh process, whose TensorFlow prints its notices again:
            # it inherits this command's stderr, filtered (`native_logs`).
            records.extend(bench.run(config, emit))

    if fv.output:  # lines go to a temporary name as they come; --output appears whole
        files.write_atomically(fv.output, measure)
    else:
        measure()
    print("\n" + bench.markdown_table(records))
    return 0
