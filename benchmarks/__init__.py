"""tfresnet's benchmarks: programs over the library, run from the root of a clone, not installed.

    python -m benchmarks.bench              # throughput, FLOP rate, memory (docs/performance.md)
    python -m benchmarks.backend_bench      # one model under KERAS_BACKEND=jax, torch, tensorflow
    python -m benchmarks.timed_train [tfresnet train flags]   # a training, phase by phase
    python -m benchmarks.end_to_end         # tfresnet against its PyTorch peer, whole processes
    python -m benchmarks.paired_step_rate   # step rates against PyTorch, model by model
    python -m benchmarks.train_ab           # paired A/B of two settings (bench_ab: of the bench)
    python -m benchmarks.time_to_accuracy   # a recipe's time to accuracy over seeds; --ablate

They reach tfresnet through its public calls and Keras callbacks only; tfresnet never imports
them. A program started so (`python -m benchmarks.NAME`) that loads Keras hides TensorFlow's
native log lines as the `tfresnet` command does (`--verbose_logs` shows them): in such a process
`import tfresnet` leaves Keras alone (tfresnet/__init__.py), and it is loaded here, its load-time
lines filtered, before the program's own imports run.
"""

import sys

# The programs that load Keras.
KERAS_PROGRAMS = ("bench", "backend_bench", "timed_train", "time_to_accuracy")


def _started_program():
    """NAME of `python -m benchmarks.NAME`, else None (imported by a test or a notebook)."""
    argv = getattr(sys, "orig_argv", [])
    for flag, module in zip(argv, argv[1:], strict=False):
        if flag == "-m" and module.startswith("benchmarks."):
            return module.removeprefix("benchmarks.")
    return None


if _started_program() in KERAS_PROGRAMS:
    from tfresnet.cli import native_logs

    LOG_LEVEL = native_logs.configure([sys.argv[0], _started_program(), *sys.argv[1:]])
    with native_logs.filtered_stderr(LOG_LEVEL):
        import tfresnet.layers  # noqa: F401 -- Keras, its backend, tfresnet's registered layers


def run(program, define_flags, body, argv=None) -> int:
    """The command line of `python -m benchmarks.<program>`: flags only (`define_flags(fv)`
    defines them, --help lists them), then `body(fv)`. Returns the exit status: 0; 2 for a bad
    command line or setting (absl's flags.Error, ValueError, a missing file); 130 on Ctrl-C; 1
    for any other failure. Each error is one line on stderr, as the `tfresnet` command's are."""
    from absl import flags

    from tfresnet.cli import native_logs

    argv = sys.argv[1:] if argv is None else argv
    fv = flags.FlagValues()
    define_flags(fv)
    native_logs.define_flag(fv)  # read before Keras loads (above); listed in --help
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv):
        print(f"python -m benchmarks.{program} flags:\n{fv.get_help()}")
        return 0
    try:
        stray = fv([program, *argv])[1:]
        if stray:
            raise ValueError(
                f"python -m benchmarks.{program} takes flags only (--name=value); got "
                f"{' '.join(stray)!r}."
            )
        body(fv)
    except (flags.Error, ValueError, FileNotFoundError) as err:
        print(f"error: {_first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- one line, as the tfresnet commands print
        print(f"error: {type(err).__name__}: {_first_line(err)}", file=sys.stderr)
        return 1
    return 0


def _first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
