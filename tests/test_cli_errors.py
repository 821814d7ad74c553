"""Every bad input we handle: one line on stderr, no traceback, exit 2 (usage) or 1 (runtime).

The table in docs/errors.md is made from CASES by running this file:

    python tests/test_cli_errors.py > docs/errors.md

and a test checks that every case is in it, so the page cannot drift from what is tested.
"""

import contextlib
import gzip
import io
import json
import os
import shutil
import sys
import zipfile

import pytest
from repo_files import repo_file

from tfresnet import cli

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = ["train", "--model=cifar_resnet8", "--noexport", "--verbose=0", "--run_dir={tmp}/r"]
TRAIN = [*BASE, "--epochs=1"]
PREDICT = ["predict", "--model={export}"]


def _folder(root, classes, per_class=2, size=(8, 8)):
    from PIL import Image

    for cls in classes:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            Image.new("L", size, 40 * i).save(os.path.join(root, cls, f"{i}.png"))
    return root


def _hostile_data(tmp):
    """MNIST-format folders with one bad file each, and image folders with a FIFO, a class
    named with a newline or with bytes that are not UTF-8, and 12 classes."""
    import pathlib

    import numpy as np
    from test_idx import write_gzip_bomb, write_header, write_idx, write_mnist_folder

    bad = {
        "idx_zero": ("train-images-idx3-ubyte.gz", lambda p: write_header(p, (12, 0, 7))),
        "idx_bomb": ("t10k-images-idx3-ubyte.gz", lambda p: write_gzip_bomb(p, (6, 7, 7), 4 << 20)),
        "idx_huge": (
            "t10k-images-idx3-ubyte.gz",
            lambda p: write_header(p, (4_000_000_000, 4_000_000_000, 7)),
        ),
        "idx_label": (
            "train-labels-idx1-ubyte.gz",
            lambda p: write_idx(p, np.int32([2**31 - 1] * 12)),
        ),
        "idx_rgba": (
            "t10k-images-idx3-ubyte.gz",
            lambda p: write_idx(p, np.zeros((6, 7, 7, 2), "uint8")),
        ),
    }
    for name, (file, write) in bad.items():
        folder = pathlib.Path(tmp, name)
        write_mnist_folder(folder)
        write(folder / file)
    os.mkfifo(os.path.join(_folder(os.path.join(tmp, "fifo"), ["a", "b"]), "a", "pipe.png"))
    _folder(os.path.join(tmp, "newline"), ["a", "b\nc"])
    latin1 = _folder(os.path.join(tmp, "latin1"), ["a"])
    os.rename(os.path.join(latin1, "a"), os.path.join(os.fsencode(latin1), b"caf\xe9"))
    _folder(latin1, ["b"])
    _folder(os.path.join(tmp, "twelve"), [f"c{i:02d}" for i in range(12)])


def _model_file(path):
    from tfresnet import build_model

    build_model("cifar_resnet8", input_shape=(8, 8, 1), num_classes=10).save(path)
    return path


def _finished_run(tmp):
    run = os.path.join(tmp, "finished")
    argv = [a.format(tmp=tmp) for a in BASE]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["tfresnet", *argv, "--steps=1", f"--run_dir={run}"]) == 0
    return run


# (what is wrong, command after `tfresnet`, exit status, text the one-line message contains).
# `{tmp}` is a scratch folder; `{keras}`, `{cut_keras}`, `{flipped_keras}`, `{run}`, `{busy}`
# are made there by `scratch` ({busy}: a run directory whose lock the test holds, as a process
# training in it would), and hostile files (tests/test_untrusted.py makes them): `{deep_keras}`,
# `{bomb_keras}`, `{h5_bomb_keras}`, images beside `{export}` (an export of `{keras}`).
CASES = [
    ("unknown command", ["trian"], 2, "unknown command 'trian'; allowed: train"),
    ("unknown flag", ["train", "--epoch=3"], 2, "Unknown command line flag 'epoch'"),
    ("unknown model", ["train", "--model=resnet21"], 2, "6n+2"),
    ("unknown model name", ["train", "--model=vgg16"], 2, "Unknown model name 'vgg16'"),
    ("precision not allowed", ["train", "--precision=float8"], 2, "--precision"),
    ("strategy not allowed", ["train", "--strategy=horovod"], 2, "--strategy"),
    ("shortcut not allowed", ["train", "--shortcut=D"], 2, "--shortcut"),
    ("lr rule not allowed", ["train", "--lr_rule=sqrt"], 2, "--lr_rule"),
    ("batch size 0", [*TRAIN, "--batch_size=0"], 2, "batch_size must be >= 1"),
    ("batch larger than the data", [*TRAIN, "--batch_size=5000"], 2, "larger than the 1438"),
    ("negative epochs", [*BASE, "--epochs=-1"], 2, "epochs must be"),
    ("zero budget", [*BASE, "--budget=0"], 2, "budget must be"),
    ("zero steps", [*BASE, "--steps=0"], 2, "steps must be"),
    ("two run lengths", [*TRAIN, "--steps=5"], 2, "at most one of"),
    ("steps per execution 0", [*TRAIN, "--steps_per_execution=0"], 2, "steps_per_execution"),
    ("resume and overwrite", [*TRAIN, "--resume", "--overwrite"], 2, "at most one of resume"),
    ("negative validation size", [*TRAIN, "--validation_size=-1"], 2, "validation_size must"),
    ("negative seed", [*TRAIN, "--seed=-1"], 2, "seed must be between 0 and 2**32 - 1; got -1"),
    ("negative learning rate", [*TRAIN, "--learning_rate=-0.1"], 2, "learning_rate must be"),
    ("NaN weight decay", [*TRAIN, "--weight_decay=nan"], 2, "weight_decay must be a number"),
    ("infinite budget", [*BASE, "--budget=inf"], 2, "budget must be > 0"),
    ("huge width multiplier", [*TRAIN, "--model=resnet8:width_multiplier=1e308"], 2, "infinite"),
    ("net too big for memory", [*TRAIN, "--model=resnet8:width_multiplier=1e5"], 2, "memory"),
    ("validation takes all data", [*TRAIN, "--validation_size=5000"], 2, "leaves no training"),
    ("unknown data set", [*TRAIN, "--dataset=no_such_set"], 2, "Unknown data set 'no_such_set'"),
    ("missing data folder", [*TRAIN, "--dataset={tmp}/none/"], 2, "does not exist"),
    ("folder with one class", [*TRAIN, "--dataset={tmp}/one"], 2, "at least 2"),
    ("empty class folder", [*TRAIN, "--dataset={tmp}/empty"], 2, "hold no readable image"),
    ("truncated IDX file", [*TRAIN, "--dataset={tmp}/idx"], 2, "truncated or padded"),
    ("image size 0", [*TRAIN, "--dataset={tmp}/two", "--image_size=0"], 2, "image_size must"),
    ("replicas 0", [*TRAIN, "--num_replicas=0"], 2, "num_replicas must be"),
    ("resume with no run", [*TRAIN, "--resume", "--run_dir={tmp}/new"], 1, "no run to continue"),
    ("finished run", [*BASE, "--steps=1", "--run_dir={run}"], 1, "holds a finished run"),
    ("different run", [*TRAIN, "--run_dir={run}"], 1, "holds a different run"),
    ("run dir in use", [*TRAIN, "--run_dir={busy}"], 138, "in use: another process is training"),
    # The reason varies: sysfs refuses ("Operation not permitted"); Bazel's sandbox mounts /sys
    # read-only ("Read-only file system").
    (
        "unwritable run dir",
        [*TRAIN, "--run_dir=/sys/tfresnet-run"],
        1,
        "PermissionDeniedError: /sys/tfresnet-run;",
    ),
    ("run dir under a file", [*TRAIN, "--run_dir={keras}/run"], 2, "which is a file"),
    ("missing pretrained file", [*TRAIN, "--pretrained={tmp}/no.h5"], 2, "no.h5' does not exist"),
    ("TF_CONFIG not JSON", ["TF_CONFIG=nope", *TRAIN], 2, "TF_CONFIG is not valid JSON"),
    ("TF_CONFIG index a string", ["TF_CONFIG=STRING_INDEX", *TRAIN], 2, "must be a JSON integer"),
    ("TF_CONFIG a ps task", ["TF_CONFIG=PS_TASK", *TRAIN], 2, "parameter-server training"),
    ("TF_CONFIG an evaluator", ["TF_CONFIG=EVALUATOR", *TRAIN], 2, "allowed: chief, worker"),
    ("peer timeout 0", [*TRAIN, "--peer_timeout=0"], 2, "peer_timeout must be a number of"),
    ("evaluate: no model", ["evaluate", "--model_path={tmp}/x.keras"], 2, "No model at"),
    ("evaluate: truncated .keras", ["evaluate", "--model_path={cut_keras}"], 2, "not a readable"),
    ("evaluate: corrupt .keras", ["evaluate", "--model_path={flipped_keras}"], 2, "not a readable"),
    ("evaluate: not .keras", ["evaluate", "--model_path={tmp}/one/a/0.png"], 2, "not a .keras"),
    ("evaluate: batch 0", ["evaluate", "--model_path={keras}", "--batch_size=0"], 2, ">= 1"),
    (
        "evaluate: image size -3",
        ["evaluate", "--model_path={keras}", "--image_size=-3"],
        2,
        "image_size",
    ),
    (
        "evaluate: shape mismatch",
        ["evaluate", "--model_path={keras}", "--dataset={tmp}/two", "--image_size=16"],
        2,
        "takes 8x8x1 images",
    ),
    ("evaluate: flag missing", ["evaluate"], 2, "--model_path"),
    ("export: no export dir", ["export", "--model_path={keras}"], 2, "--export_dir"),
    (
        "export: truncated .keras",
        ["export", "--model={cut_keras}", "--export_dir={tmp}/e"],
        2,
        "not a readable",
    ),
    (
        "export: no class names file",
        ["export", "--model={keras}", "--export_dir={tmp}/e", "--class_names={tmp}/no.txt"],
        2,
        "--class_names file",
    ),
    (
        "export: top_k 0",
        ["export", "--model={keras}", "--export_dir={tmp}/e", "--top_k=0"],
        2,
        "top_k",
    ),
    (
        "export: bad name",
        ["export", "--model={keras}", "--export_dir={tmp}/e", "--model_name=a/b"],
        2,
        "model_name",
    ),
    ("predict: no export", ["predict", "--model={tmp}/none", "{tmp}/one/a/0.png"], 2, "none"),
    ("predict: export path a file", ["predict", "--model={keras}", "a.png"], 2, "is a file"),
    ("tune: unknown tuner", ["tune", "--tuner=annealing"], 2, "--tuner"),
    ("tune: unknown objective", ["tune", "--objective=val_f1:max"], 2, "a trial logs accuracy"),
    ("tune: hyperband factor 1", ["tune", "--hyperband_factor=1"], 2, "hyperband_factor must"),
    ("tune: empty shortcut list", ["tune", "--shortcut="], 2, "shortcut: give at least one"),
    ("stray argument", [*TRAIN, "extra"], 2, "takes flags only (--name=value); got 'extra'"),
    ("models: unknown name", ["models", "--names=resnet7"], 2, "6n+2"),
    ("IDX dimension of 0", [*TRAIN, "--dataset={tmp}/idx_zero"], 2, "holds an empty array"),
    ("IDX gzip bomb", [*TRAIN, "--dataset={tmp}/idx_bomb"], 2, "the file has more than that"),
    ("IDX header past its file", [*TRAIN, "--dataset={tmp}/idx_huge"], 2, "cannot hold what"),
    ("IDX label 2**31-1", [*TRAIN, "--dataset={tmp}/idx_label"], 2, "label 2147483647 at index 0"),
    ("IDX 2-channel images", [*TRAIN, "--dataset={tmp}/idx_rgba"], 2, "images of 2 channels"),
    ("FIFO in a class folder", [*TRAIN, "--dataset={tmp}/fifo"], 2, "is a FIFO (named pipe)"),
    ("newline in a class name", [*TRAIN, "--dataset={tmp}/newline"], 2, "character U+000A"),
    ("class name not UTF-8", [*TRAIN, "--dataset={tmp}/latin1"], 2, "it is not valid UTF-8"),
    ("image size for digits", [*TRAIN, "--image_size=16"], 2, "does not apply to digits"),
    (
        "evaluate: 12 classes, 10-class model",
        ["evaluate", "--model_path={keras}", "--dataset={tmp}/twelve"],
        2,
        "The model has 10 outputs (classes) but",
    ),
    (
        "evaluate: image size for digits",
        ["evaluate", "--model_path={keras}", "--image_size=16"],
        2,
        "the model takes 8x8x1 images: leave --image_size out",
    ),
    ("empty run dir", [*TRAIN, "--run_dir="], 2, "run_dir is empty: give a folder path"),
    ("epochs out of range", [*BASE, "--epochs=10000000000000000000"], 2, "between 1 and 2,147"),
    ("budget beyond any run", [*BASE, "--budget=1e9"], 2, "at most 2,147,483,647 are allowed"),
    (
        "overwrite a folder of the user's",
        [*TRAIN, "--overwrite", "--run_dir={thesis}"],
        2,
        "holds files that no tfresnet run wrote (chapter1.tex, figures/); --overwrite deletes",
    ),
    ("overwrite a run in training", [*TRAIN, "--overwrite", "--run_dir={busy}"], 138, "in use"),
    ("truncated run config", [*TRAIN, "--run_dir={cut_config}"], 2, "is not readable JSON"),
    (
        "truncated backup record",
        [*BASE, "--steps=1", "--run_dir={cut_state}"],
        2,
        "state.json is not readable JSON",
    ),
    (
        "evaluate: truncated run config",
        ["evaluate", "--model_path={cut_config}"],
        2,
        "names the data set of the run",
    ),
    (
        "predict: corrupt SavedModel",
        ["predict", "--model={bad_export}", "{tmp}/one/a/0.png"],
        2,
        "is not a readable SavedModel",
    ),
    (
        "export: export dir a file",
        ["export", "--model={keras}", "--export_dir={keras}"],
        2,
        "is a file, not a folder",
    ),
    (
        "export: unreadable models.config",
        ["export", "--model={keras}", "--export_dir={bad_config}"],
        2,
        "is not a TF Serving ModelServerConfig",
    ),
    ("tune: zero epochs", ["tune", "--epochs=0"], 2, "epochs must be between 1 and 2,147"),
    ("tune: empty directory", ["tune", "--directory="], 2, "directory is empty"),
    (
        "tune: overwrite a folder of the user's",
        ["tune", "--overwrite", "--epochs=1", "--directory={thesis}"],
        2,
        "holds files that no tfresnet run wrote (chapter1.tex, figures/); --overwrite deletes",
    ),
    (
        "tune: truncated search.json",
        ["tune", "--epochs=1", "--directory={cut_search}"],
        2,
        "search.json is not readable JSON",
    ),
    ("evaluate: config 200,000 deep", ["evaluate", "--model_path={deep_keras}"], 2, "nests deep"),
    (
        "export: config 200,000 deep",
        ["export", "--model={deep_keras}", "--export_dir={tmp}/e"],
        2,
        "nests deeper than 100 levels",
    ),
    ("evaluate: .keras zip bomb", ["evaluate", "--model_path={bomb_keras}"], 2, "decompression"),
    ("evaluate: weights bomb", ["evaluate", "--model_path={h5_bomb_keras}"], 2, "weight arrays"),
    ("predict: 38-byte WebP, 10000x10000", [*PREDICT, "{tmp}/bomb.webp"], 1, "image too large"),
    ("predict: GIF 1x1 with a 10000x10000 frame", [*PREDICT, "{tmp}/bomb.gif"], 1, "too large"),
    ("predict: JPEG XL", [*PREDICT, "{tmp}/image.jxl"], 1, "JPEG XL images are not accepted"),
    ("predict: JPEG libjpeg rejects", [*PREDICT, "{tmp}/huffman.jpg"], 1, "(Bogus Huffman table"),
    ("predict: JPEG header damaged", [*PREDICT, "{tmp}/damaged.jpg"], 1, "header too short, dam"),
    ("predict: a FIFO", [*PREDICT, "{tmp}/fifo/a/pipe.png"], 1, "FIFO (named pipe), not a regular"),
    ("config file missing", ["train", "--config={tmp}/no/config.json"], 2, "does not exist"),
    ("config file not JSON", ["train", "--config={tmp}/one/a/0.png"], 2, "not readable JSON"),
    ("flip test on digits", [*TRAIN, "--recipe=fast", "--test_flip"], 2, "not trained mirrored"),
    ("label smoothing 1", [*TRAIN, "--label_smoothing=1"], 2, "label_smoothing must be a number"),
    ("EMA momentum 1", [*TRAIN, "--ema_momentum=1"], 2, "ema_momentum must be a number >= 0"),
    ("negative warm-up", [*TRAIN, "--warmup_epochs=-1"], 2, "warmup_epochs must be a number"),
    ("schedule not allowed", ["train", "--lr_schedule=linear"], 2, "--lr_schedule"),
    (
        "evaluate: flip and ten-crop",
        ["evaluate", "--model_path={keras}", "--flip", "--ten_crop"],
        2,
        "flip and ten_crop",
    ),
    (
        "predict: weights not shipped",
        ["predict", "--model=resnet20", "--weights=imagenet", "{tmp}/one/a/0.png"],
        2,
        "No shipped weights 'imagenet' for resnet20; shipped: ",
    ),
    (
        "predict: weights_dir without weights",
        [*PREDICT, "--weights_dir={tmp}", "{tmp}/one/a/0.png"],
        2,
        "--weights_dir applies only with --weights=NAME",
    ),
    (
        "predict: weights file missing",
        ["predict", "--model=resnet20", "--weights={tmp}/no.weights.h5", "{tmp}/one/a/0.png"],
        2,
        "no.weights.h5' is not a file",
    ),
    (
        "export: weights with a .keras path",
        ["export", "--model={keras}", "--weights=fashion_mnist", "--export_dir={tmp}/e"],
        2,
        "needs a model name from the table (such as 'resnet20')",
    ),
    (
        "export: weights for another net",
        ["export", "--model=resnet32", "--weights=fashion_mnist", "--export_dir={tmp}/e"],
        2,
        "No shipped weights 'fashion_mnist' for resnet32",
    ),
    (
        "tune: zero trial time budget",
        ["tune", "--trial_time_budget=0"],
        2,
        "trial_time_budget must",
    ),
    ("tune: time_to past 1", ["tune", "--objective=time_to:2"], 2, "in (0, 1], e.g. time_to:0.94"),
    (
        "tune: time_to without a budget",
        ["tune", "--objective=time_to:0.9"],
        2,
        "needs --trial_time_budget",
    ),
    (
        "tune: time_to under hyperband",
        ["tune", "--objective=time_to:0.9", "--trial_time_budget=60", "--tuner=hyperband"],
        2,
        "does not work with hyperband",
    ),
    (
        "tune: zero width multiplier",
        ["tune", "--width_multiplier=1,0"],
        2,
        "width_multiplier must be",
    ),
    ("tune: label smoothing of 1", ["tune", "--label_smoothing=0,1"], 2, "label_smoothing must be"),
    ("tune: empty batch size list", ["tune", "--batch_size="], 2, "batch_size: give at least one"),
    (
        "tune: hyperband without epochs",
        ["tune", "--tuner=hyperband", "--dataset=cifar10", "--directory={tmp}/s"],
        2,
        "hyperband counts a trial's budget in epochs",
    ),
]

PLACEHOLDERS = {
    "tmp": "<tmp>",
    "keras": "<model.keras>",
    "cut_keras": "<truncated.keras>",
    "flipped_keras": "<corrupt.keras>",
    "run": "<finished run>",
    "busy": "<run dir in training>",
    "thesis": "<a folder of the user's>",
    "cut_config": "<run with a truncated config.json>",
    "cut_state": "<run with a truncated backup/state.json>",
    "bad_export": "<export with a corrupt saved_model.pb>",
    "bad_config": "<folder with an unreadable models.config>",
    "cut_search": "<search with a truncated search.json>",
    "deep_keras": "<deep.keras>",
    "bomb_keras": "<zip-bomb.keras>",
    "h5_bomb_keras": "<weights-bomb.keras>",
    "export": "<export>",
}
TF_CONFIGS = {
    "STRING_INDEX": '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", '
    '"index": "0"}}',
    "PS_TASK": '{"cluster": {"worker": ["localhost:1"], "ps": ["localhost:2"]}, "task": '
    '{"type": "ps", "index": 0}}',
    "EVALUATOR": '{"cluster": {"worker": ["localhost:1"], "evaluator": ["localhost:2"]}, '
    '"task": {"type": "evaluator", "index": 0}}',
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("errors"))
    _folder(os.path.join(tmp, "one"), ["a"])
    _folder(os.path.join(tmp, "two"), ["a", "b"], per_class=3)
    _folder(os.path.join(tmp, "empty"), ["a", "b"])
    os.makedirs(os.path.join(tmp, "empty", "c"))
    idx = os.path.join(tmp, "idx")
    sys.path.insert(0, HERE)
    from test_idx import write_mnist_folder

    write_mnist_folder(__import__("pathlib").Path(idx))
    path = os.path.join(idx, "t10k-images-idx3-ubyte.gz")
    with gzip.open(path) as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-10])
    _hostile_data(tmp)
    keras_path = _model_file(os.path.join(tmp, "m.keras"))
    cut = os.path.join(tmp, "cut.keras")
    with open(keras_path, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    flipped = os.path.join(tmp, "flipped.keras")
    with zipfile.ZipFile(keras_path) as src, zipfile.ZipFile(flipped, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename.endswith(".json"):
                body = body[:10] + b"\x00\xff" + body[12:]
            dst.writestr(item, body)
    busy = os.path.join(tmp, "busy")
    os.makedirs(busy)
    from test_runlock import held_by_another_process

    with held_by_another_process(busy):
        run = _finished_run(tmp)
        hostile = _hostile_files(tmp, keras_path)
        yield {
            "tmp": tmp,
            "keras": keras_path,
            "cut_keras": cut,
            "flipped_keras": flipped,
            "run": run,
            "busy": busy,
            **_damaged_folders(tmp, hostile["export"]),
            **hostile,
        }


def _hostile_files(tmp, keras_path):
    """.keras files that are bombs or nest too deep, and images that are bombs or damaged,
    beside an export of `keras_path` (tests/test_untrusted.py says what each one is)."""
    import keras
    from test_untrusted import (
        GIF_BOMB,
        WEBP_BOMB,
        bad_huffman_jpeg,
        deep_keras,
        h5_bomb_keras,
        zip_bomb_keras,
    )

    from tfresnet.export import export_for_serving

    images = {
        "bomb.webp": WEBP_BOMB,
        "bomb.gif": GIF_BOMB,
        "image.jxl": b"\xff\x0a\xff\x07\x08\x83\x04\x0c\x00\x4b\x20\x18" + bytes(100),
        "damaged.jpg": b"\xff\xd8\xff" + bytes(50),  # libjpeg: "Input file read error"
        "huffman.jpg": bad_huffman_jpeg(),
    }
    for name, data in images.items():
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
    model = keras.saving.load_model(keras_path)
    return {
        "deep_keras": deep_keras(os.path.join(tmp, "deep.keras")),
        "bomb_keras": zip_bomb_keras(os.path.join(tmp, "bomb.keras"), keras_path),
        "h5_bomb_keras": h5_bomb_keras(os.path.join(tmp, "h5bomb.keras"), keras_path),
        "export": export_for_serving(model, os.path.join(tmp, "ex"), warmup=False),
    }


def _damaged_folders(tmp, export_version):
    """A folder of the user's, and runs, exports and searches with a file cut short or garbled.

    Made from the finished run, so the commands given them are the ones that made it, and from
    a copy of the export at `export_version`.
    """
    paths = {k: os.path.join(tmp, k) for k in ("thesis", "cut_config", "cut_state", "cut_search")}
    os.makedirs(os.path.join(paths["thesis"], "figures"))
    with open(os.path.join(paths["thesis"], "chapter1.tex"), "w") as f:
        f.write("four years of work")
    finished = os.path.join(tmp, "finished", "config.json")
    for name in ("cut_config", "cut_state"):
        with open(finished) as f:
            config = json.load(f)
        config["run_dir"] = paths[name]
        os.makedirs(os.path.join(paths[name], "backup"))
        with open(os.path.join(paths[name], "config.json"), "w") as f:
            f.write(json.dumps(config)[: 40 if name == "cut_config" else None])
    with open(os.path.join(paths["cut_state"], "backup", "state.json"), "w") as f:
        f.write('{"epoch": 1, "weights": "epoch-1.wei')
    os.makedirs(paths["cut_search"])
    with open(os.path.join(paths["cut_search"], "search.json"), "w") as f:
        f.write('{"train": {"mod')
    base = os.path.dirname(os.path.dirname(export_version))  # <base>/<model name>/<version>
    shutil.copytree(base, os.path.join(tmp, "bad_export"))
    version = os.path.join(tmp, "bad_export", os.path.relpath(export_version, base))
    with open(os.path.join(version, "saved_model.pb"), "r+b") as f:
        f.seek(20)
        f.write(b"\xff" * 40)
    paths["bad_export"] = os.path.join(tmp, "bad_export")
    paths["bad_config"] = os.path.join(tmp, "bad_config")
    os.makedirs(paths["bad_config"])
    with open(os.path.join(paths["bad_config"], "models.config"), "w") as f:
        f.write("model_config_list { config { name: ")
    return paths


def run_case(argv, values):
    """(status, stderr) of `tfresnet argv`, with {placeholders} and TF_CONFIG=... applied."""
    env = {}
    while argv and "=" in argv[0] and argv[0].split("=")[0].isupper():
        key, value = argv[0].split("=", 1)
        env[key] = TF_CONFIGS.get(value, value)
        argv = argv[1:]
    argv = [a.format(**values) for a in argv]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(["tfresnet", *argv])
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return status, err.getvalue()


@pytest.mark.parametrize("what, argv, status, text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(scratch, what, argv, status, text):
    got, stderr = run_case(list(argv), scratch)
    assert got == status, stderr
    assert text in stderr, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr  # one line


def test_traceback_flag_shows_where(scratch):
    status, stderr = run_case([*TRAIN, "--batch_size=5000", "--traceback"], scratch)
    assert status == 2 and "Traceback (most recent call last)" in stderr


# What worker 0 raised when worker 1 of 2 was killed (tests/test_distribute.py kills one): its
# own devices come first, the lost worker only in the coordination service's words.
LOST_PEER = (
    "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call "
    "last):\n  File ...\nCollective ops is aborted by: Error reported from /job:worker/task:1: "
    "The following tasks are unhealthy (stopped sending heartbeats):\n"
    "/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task logs for an earlier "
    "error.\n\t [[{{node CollectiveReduceV2}} = CollectiveReduceV2[..., "
    '_device="/job:worker/replica:0/task:0/device:CPU:0"]()]]'
)


def test_a_lost_worker_is_retryable_and_says_which_and_where_to_resume(tmp_path, monkeypatch):
    import tensorflow as tf

    from tfresnet import files, rundir

    run = str(tmp_path / "run")
    files.write_json(os.path.join(run, "backup", rundir.STATE), {"epoch": 4, "weights": "w"})
    workers = '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": '
    monkeypatch.setenv("TF_CONFIG", workers + '"worker", "index": 0}}')
    fv = type("Flags", (), {"run_dir": run, "traceback": False, "__contains__": lambda s, k: 1})()
    leader_gone = (  # what the survivor, worker 0 here, raises when worker 1 leads and is gone
        "Failed to send RPC to coordination service. Either the leader task was preempted/died/"
        "restarted unexpectedly or this task is experiencing network issues.\nAdditional GRPC "
        "error information from remote target /job:worker/replica:0/task:1 while calling "
        "/tensorflow.CoordinationService/Heartbeat:\n:UNKNOWN:Error received from peer"
    )
    unreachable = "Socket closed. Peer /job:worker/replica:0/task:1 is unreachable"
    for detail in (LOST_PEER, leader_gone, unreachable):
        lost = tf.errors.UnavailableError(None, None, detail)
        status, message = cli.classify_error(lost, fv)
        assert status == cli.EXIT_RETRY == 138
        assert message.startswith("lost contact with worker 1 (") and "task" not in message
        assert "resumes from epoch 5" in message and "\n" not in message
    status, message = cli.classify_error(tf.errors.UnavailableError(None, None, "?"), fv)
    assert status == 138 and message.startswith("lost contact with a peer worker (")
    assert cli.lost_workers(LOST_PEER) == [("worker", 1)]  # not its own devices, even unnamed
    assert cli.classify_error(KeyboardInterrupt(), fv)[0] == 130
    # A damaged backup is the rerun's to refuse (naming it); this message only leaves out the epoch.
    with open(os.path.join(run, "backup", rundir.STATE), "w") as f:
        f.write('{"epoch": 4, "weig')
    status, message = cli.classify_error(tf.errors.UnavailableError(None, None, LOST_PEER), fv)
    assert status == 138 and message.endswith("the run resumes.") and "\n" not in message


def _catches_sigterm(pid) -> bool:
    """Whether process `pid` has a SIGTERM handler installed (Linux: /proc/PID/status)."""
    import signal

    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


SIGTERMED = (
    "error: SIGTERM: stopped; a training run resumes from its last backup when the same command "
    "runs again.\n"
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
@pytest.mark.parametrize(
    "delay, signals",
    [
        (0.0, 1),  # as soon as the handler is there: absl, the log filter start
        (0.0, 2),
        (1.0, 2),  # TensorFlow importing
        pytest.param(6.0, 2, marks=pytest.mark.slow),  # TensorFlow importing, or the data
        pytest.param(15.0, 1, marks=pytest.mark.slow),  # loading, building, or training
    ],
)
def test_sigterm_at_start_exits_143_with_one_line(tmp_path, delay, signals):
    """A cluster manager's SIGTERM (one, or a second as it loses patience) at an early instant:
    exit status 143 and the one line, never a traceback or death by the signal. Timed from the
    moment the handler is installed; before that the interpreter itself is starting."""
    import signal
    import subprocess
    import time

    from tfresnet.cli import native_logs

    argv = [a.format(tmp=tmp_path) for a in [*BASE, "--epochs=40"]]  # still running at 15 s
    env = {k: v for k, v in os.environ.items() if k not in native_logs.ENVIRONMENT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfresnet.cli", *argv], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert (proc.returncode, stderr) == (143, SIGTERMED) or (
        proc.returncode == 143
        and stderr.startswith("error: SIGTERM: stopped on request in")
        and stderr.count("\n") == 1
    ), stderr  # in training already: backed up first


def test_the_docs_list_every_case():
    with open(repo_file("docs/errors.md")) as f:
        page = f.read()
    for what, *_ in CASES:
        assert f"| {what} |" in page, f"docs/errors.md lacks {what!r}: regenerate it (see top)"


def markdown(values):
    """The docs table: each case with the status and message a user sees."""
    rows = [
        "# Bad input and what tfresnet says",
        "",
        "Every case is run by `tests/test_cli_errors.py`; this page is its output "
        "(`python tests/test_cli_errors.py > docs/errors.md`). Status 2: fix the command; "
        "1: the run cannot go on; 130: interrupted (run it again to resume); 138: retryable "
        "(a peer worker was lost or never came up, or another process is training in the run "
        "directory); 143: "
        "stopped by SIGTERM after a backup (run it again to resume). "
        "A file that does not parse is bad input, status 2, whether you named it (a `.keras` "
        "model, an export, a data file) or it lies in a folder you pointed at (a run's "
        "`config.json` or `backup/state.json`, a search's `search.json`, an export folder's "
        "`models.config`): the message "
        "names the file, says what is wrong and what to do; tfresnet writes its own files "
        "whole, so a damaged one was changed by something else, and it is never silently "
        "trained over. `--overwrite` deletes only the files a run (or a search) writes, and "
        "refuses a folder that holds anything else. "
        "`--traceback` adds the Python traceback. Paths below "
        "are from the scratch folder the test makes.",
        "",
        "| input | command | status | message |",
        "|---|---|---:|---|",
    ]
    for what, argv, _, _ in CASES:
        status, stderr = run_case(list(argv), values)
        message = next(line for line in stderr.splitlines() if line.startswith("error:"))
        message = message.replace(values["tmp"], "<tmp>").replace("|", "\\|")
        env = [a for a in argv if a.split("=")[0].isupper()]
        command = " ".join([*env, "tfresnet", *argv[len(env) :]]).replace("|", "\\|")
        for key, shown in PLACEHOLDERS.items():
            command = command.replace("{" + key + "}", shown)
        rows.append(f"| {what} | `{command}` | {status} | {message} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import tempfile

    class _Factory:
        def mktemp(self, name):
            return tempfile.mkdtemp(prefix=name)

    made = scratch.__wrapped__(_Factory())
    values = next(made)
    try:
        sys.stdout.write(markdown(values))
    finally:
        made.close()  # releases {busy}
        shutil.rmtree(values["tmp"], ignore_errors=True)
