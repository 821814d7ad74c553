"""The training walk: which tfresnet modules `train.train(config)` enters, in what order, and how
often it climbs back up to a module it already left (issue 31's "the walk is long").

    python benchmarks/training_walk.py [--export]

Traces a tiny run (digits, cifar_resnet8, 1 epoch, a few steps) with `sys.setprofile`. An
*entry* is a call into a tfresnet module from a different one (the caller is the nearest
tfresnet frame up the stack, so Keras calling our callbacks counts as the module that called
fit); each distinct (caller, callee) pair counts once, so loop lengths do not matter. A *return*
is an entry into a module that was already entered; a *climb* is an entry into a module that
was first entered before the caller was (back up the flow). Import-time module bodies are left
out.
"""

import argparse
import collections
import inspect
import os
import sys
import tempfile


def _module(frame):
    name = frame.f_globals.get("__name__", "")
    return name if name.startswith("tfresnet") else None


def trace_walk(run) -> tuple[list, list, list]:
    """The distinct (caller module, callee module) entries of `run()`, in first-seen order; the
    distinct (caller module, callee module, callee function) calls; and the top-level walk: the
    modules that tfresnet.train's own code calls directly, in time order, repeats in a row
    collapsed."""
    edges, calls, top = {}, {}, []
    generators = []  # tfresnet generator frames already started: a resume is no new entry

    def profile(frame, event, arg):
        if event != "call" or frame.f_code.co_name == "<module>":
            return
        callee = _module(frame)
        if callee is None:
            return
        if frame.f_code.co_flags & inspect.CO_GENERATOR:
            if any(frame is g for g in generators):
                return
            generators.append(frame)
        caller, up = "<caller>", frame.f_back
        while up is not None:
            found = _module(up)
            if found is not None:
                caller = found
                break
            up = up.f_back
        if caller != callee:
            edges.setdefault((caller, callee), None)
            calls.setdefault((caller, callee, frame.f_code.co_qualname), None)
            up = frame.f_back  # a `with` block's generator is entered through contextlib
            while up is not None and up.f_globals.get("__name__") == "contextlib":
                up = up.f_back
            direct = up is not None and _module(up) == "tfresnet.train"
            if direct and (not top or top[-1] != callee):
                top.append(callee)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return list(edges), list(calls), top


def summarize(edges: list) -> dict:
    order, returns, climbs = [], [], []
    entries = collections.Counter()
    for caller, callee in edges:
        entries[callee] += 1
        if callee in order:
            returns.append((caller, callee))
            if caller in order and order.index(callee) < order.index(caller):
                climbs.append((caller, callee))
        else:
            order.append(callee)
    return {
        "modules": order,
        "returns": returns,
        "climbs": climbs,
        "repeated": {m: n for m, n in entries.items() if n > 1},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", action="store_true", help="also export the SavedModel")
    parser.add_argument("--verbose", action="store_true", help="list every return and climb")
    args = parser.parse_args(argv)
    from tfresnet import train as train_lib

    with tempfile.TemporaryDirectory() as tmp:
        config = train_lib.TrainConfig(
            model="cifar_resnet8",
            dataset="digits",
            epochs=1,
            batch_size=256,
            export=args.export,
            run_dir=os.path.join(tmp, "run"),
            verbose=0,
            validation_size=100,
        )
        edges, calls, sequence = trace_walk(lambda: train_lib.train(config))
    walk = summarize(edges)
    seen, again, back, previous = [], 0, 0, None
    for module in sequence:
        if module in seen:
            again += 1
            back += seen.index(module) < seen.index(previous)
        else:
            seen.append(module)
        previous = module
    top = [c for c in calls if c[0] in ("tfresnet.train", "<caller>")]
    print(f"train()'s walk ({len(sequence)} steps): {' -> '.join(sequence)}")
    print(f"  modules {len(seen)}, returns to a module already entered {again}, climbs {back}")
    print(f"modules entered ({len(walk['modules'])}): {' -> '.join(walk['modules'])}")
    print(f"returns to a module already entered: {len(walk['returns'])}")
    print(f"climbs back up the flow: {len(walk['climbs'])}")
    print(f"modules entered more than once: {len(walk['repeated'])} {walk['repeated']}")
    print(f"distinct functions of other modules called: {len(calls)}; by train(): {len(top)}")
    if args.verbose:
        for caller, callee, function in top:
            print(f"  {caller} calls {callee}.{function}")
        for caller, callee in walk["returns"]:
            mark = "climb" if (caller, callee) in walk["climbs"] else "return"
            print(f"  {mark}: {caller} -> {callee}")
    return walk


if __name__ == "__main__":
    main()
