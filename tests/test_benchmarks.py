"""benchmarks/: the PyTorch peer trainer (its augmentation, schedule, model and a 1-epoch run on
small IDX files written here), the end-to-end driver (commands, measuring, the table) and the
paired step-rate driver (its ratios from recorded runs, a run with stand-in programs); and that
the installed package stands without them.

The peer's tests need torch (`pip install -e '.[bench]'`) and skip without it."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from repo_files import ROOT, repo_file
from test_idx import write_mnist_folder

from benchmarks import ab_table, bench, bench_ab, end_to_end, train_ab
from benchmarks import paired_step_rate as paired
from tfresnet import models, recipes

BENCHMARKS = repo_file("benchmarks")
PEER_KEYS = {
    "peer", "epochs", "wall_s", "startup_s", "train_s", "eval_s", "test_error", "train_error",
    "peak_rss_mb", "images_per_s",
}  # fmt: skip


def _program(name, *args):
    """The command that runs benchmarks/NAME.py, as the docs give it: `python -m benchmarks.NAME`
    from the repository root (the tests run it with cwd=ROOT)."""
    return [sys.executable, "-m", f"benchmarks.{name}", *args]


@pytest.fixture(scope="module")
def peer():
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install -e '.[bench]'")
    from benchmarks import torch_fashion_mnist_train

    return torch_fashion_mnist_train


def test_crop_at_a_known_offset_is_that_slice_of_the_padded_image(peer):
    import torch

    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (4, 6, 5, 2), dtype="uint8")
    top, left = np.array([0, 4, 8, 2]), np.array([8, 0, 3, 5])
    flip = np.array([False, False, True, True])
    out = peer.crop_and_flip(
        torch.from_numpy(images), torch.from_numpy(top), torch.from_numpy(left),
        torch.from_numpy(flip), pad=4,
    ).numpy()  # fmt: skip
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for b in range(4):
        expected = padded[b, top[b] : top[b] + 6, left[b] : left[b] + 5]
        np.testing.assert_array_equal(out[b], expected[:, ::-1] if flip[b] else expected)
    assert out.dtype == np.uint8 and out.shape == images.shape


def test_random_flips_about_half_a_batch_and_crops_stay_in_the_padding(peer):
    import torch

    n, w = 2000, 5
    images = torch.arange(1, w + 1, dtype=torch.uint8).view(1, 1, w, 1).expand(n, 3, w, 1)
    generator = torch.Generator().manual_seed(0)
    out = peer.random_crop_flip(images.contiguous(), 0, True, generator)[:, 0, :, 0]
    flipped = (out == torch.arange(w, 0, -1, dtype=torch.uint8)).all(1)
    kept = (out == torch.arange(1, w + 1, dtype=torch.uint8)).all(1)
    assert bool((flipped | kept).all())
    assert 0.45 < float(flipped.float().mean()) < 0.55
    out = peer.random_crop_flip(images.contiguous(), 0, False, generator)[:, 0, :, 0]
    assert bool((out == torch.arange(1, w + 1, dtype=torch.uint8)).all())
    # pad 2: each crop row is a window of the zero-padded row at one of the offsets 0..4 (or a
    # row of zeros above/below the image), and every offset turns up
    crops = peer.random_crop_flip(images.contiguous(), 2, False, generator)[..., 0]
    row = np.pad(np.arange(1, w + 1), 2)
    windows = {tuple(row[k : k + w]) for k in range(5)} | {(0,) * w}
    assert {tuple(r) for r in crops.reshape(-1, w).tolist()} == windows


def test_schedule_is_tfresnets(peer):
    recipe = recipes.get_recipe("cifar")
    for total, depth in [(3 * 468, 20), (1, 20), (7, 20), (10, 110), (64_000, 110)]:
        ours = recipes.paper_schedule(recipe, total, depth=depth)
        boundaries, values = peer.paper_schedule(total, depth, 0.1)
        assert boundaries == list(ours.boundaries)
        np.testing.assert_allclose(values, ours.values, rtol=1e-12)
    assert [peer.lr_at(s, [2, 4], [1, 2, 3]) for s in range(6)] == [1, 1, 1, 2, 2, 3]


def test_model_is_tfresnets_resnet20(peer):
    import torch

    model = peer.cifar_resnet(20, 1, 10)
    ours = models.build_model("resnet20", input_shape=(28, 28, 1))
    assert sum(p.numel() for p in model.parameters()) == models.count_params(ours) == 269_434
    decay, rest = peer.param_groups(model, 1e-4)
    assert len(decay["params"]) == 20  # 19 convs + the classifier's kernel
    assert all(p.ndim == 1 for p in rest["params"])  # BN gammas/betas and the classifier bias
    x = torch.zeros(2, 1, 28, 28).to(memory_format=torch.channels_last)
    assert model(x).shape == (2, 10)


def test_peer_trains_one_epoch_on_small_idx_files(tmp_path, peer):
    folder = tmp_path / "fashion-tiny"
    write_mnist_folder(folder, n_train=80, n_test=24, size=8, classes=3)
    command = _program(
        "torch_fashion_mnist_train", "--epochs=1", "--batch_size=32", "--threads=1",
        f"--data_dir={folder}", "--limit_train=64", "--limit_test=20",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("epoch 1/1: loss ")
    result = json.loads(lines[-1])
    assert PEER_KEYS <= set(result)
    assert result["peer"] == "torch" and result["epochs"] == 1 and result["steps"] == 2
    assert (result["train_images"], result["test_images"]) == (64, 20)
    assert 0.0 <= result["test_error"] <= 1.0 and 0.0 <= result["train_error"] <= 1.0
    parts = result["startup_s"] + result["train_s"] + result["eval_s"]
    assert result["wall_s"] >= parts - 0.01 and parts > 0  # each part rounded to 1 ms
    assert result["peak_rss_mb"] > 50 and result["images_per_s"] > 0


def test_end_to_end_commands(capsys):
    end_to_end.main(["--dry_run", "--epochs=2", "--precision=mixed_bfloat16", "--seed=3"])
    tf_line, torch_line = capsys.readouterr().out.strip().splitlines()
    flags_ = ("-m benchmarks.timed_train", "--dataset=fashion_mnist", "--model=resnet20")
    flags_ += ("--epochs=2", "--overwrite", "--precision=mixed_bfloat16", "--seed=3")
    for flag in flags_:
        assert f" {flag}" in tf_line
    assert "-m benchmarks.torch_fashion_mnist_train --epochs=2 --precision=bf16 --seed=3" in (
        torch_line
    )


def test_run_process_measures_that_child():
    # A child's ru_maxrss starts at its parent's resident size when it was forked (Linux keeps
    # the larger), so measure from a small driver process, as the real runs are.
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("e2e", {str(BENCHMARKS / "end_to_end.py")!r})
e2e = importlib.util.module_from_spec(spec)
spec.loader.exec_module(e2e)
big = "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); print('hi')"
print(json.dumps([e2e.run_process([sys.executable, "-c", c], label="t", echo=False)
                  for c in (big, "exit(3)")]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    big, small = json.loads(done.stdout)
    assert big["returncode"] == 0 and big["output"] == "hi\n" and big["wall_s"] > 0
    assert 300 < big["peak_rss_mb"] < 400
    assert small["returncode"] == 3 and small["peak_rss_mb"] < 100


def test_table_and_medians():
    def side(wall, err):
        return dict(load1=1.0, wall_s=wall, images_per_s=900.0, test_error=err, peak_rss_mb=800)

    pairs = [
        {"tfresnet": side(100.0, 0.1), "torch": side(120.0, 0.12)},
        {"tfresnet": side(100.0, 0.1), "torch": side(90.0, 0.11)},
        {"tfresnet": side(50.0, None), "torch": side(100.0, 0.1)},
    ]
    summary = end_to_end.summary(pairs)
    assert summary["ratios"] == [1.2, 0.9, 2.0] and summary["ratio_torch_over_tfresnet"] == 1.2
    assert summary["tfresnet_test_error"] == 0.1 and summary["torch_wall_s"] == 100.0
    table = end_to_end.format_table(pairs).splitlines()
    assert len(table) == 2 + 3 + 1 and table[-1].startswith("| median |")
    assert table[2].endswith("| 1.20x |") and "| - |" in table[4]
    record = end_to_end.last_json_line('x\n{"peer": "torch", "a": 1}\n{"b": 2}\nend\n', "peer")
    assert record == {"peer": "torch", "a": 1}


def test_breakdown_gives_each_phase_and_the_goals_figures():
    def run(wall, startup, bookkeeping):
        timings = dict(startup_s=startup, setup_s=1.5, first_step_s=2.5, train_s=97.5,
                       eval_s=5.0, bookkeeping_s=bookkeeping, train_eval_s=1.0,
                       finish_s=2.5)  # fmt: skip
        timings["total_s"] = sum(timings.values())
        return {"tfresnet": {"wall_s": wall, "timings": timings}, "torch": {}}

    pairs = [run(120.0, 4.0, 1.0), run(130.0, 6.0, 3.0), run(125.0, 5.0, 2.0)]
    b = end_to_end.breakdown(pairs)
    assert b["wall_s"] == 125.0 and b["startup_s"] == 5.0 and b["bookkeeping_s"] == 2.0
    # exit: wall less the reported phases (medians of 120-115, 130-119, 125-117)
    assert b["exit_s"] == pytest.approx(8.0) and b["train_eval_s"] == 1.0
    assert b["final_eval_s"] == 0.0  # not reported: the test curve measured the final weights
    assert b["to_first_step_s"] == pytest.approx(5.0 + 1.5 + 2.5)
    assert b["bookkeeping_per_epoch"] == pytest.approx(2.0 / 100.0)
    table = end_to_end.format_breakdown(pairs).splitlines()
    assert len(table) == 2 + len(end_to_end.PHASES) + 1 + 2
    assert table[2] == "| start-up: interpreter, imports, flags | 5.0 | 4.0% |"
    assert "first training step: 9.0 s" in table[-1] and "2.0% of the training time" in table[-1]
    assert end_to_end.breakdown([{"tfresnet": {"wall_s": 1.0}, "torch": {}}]) == {}


def _train_ab_commands(a, b, flags):
    """(args, a's command, b's command) of train_ab run with these settings."""
    args = train_ab.parse_args([f"--a={a}", f"--b={b}", f"--flags={flags}", "--tfresnet=tfresnet"])
    return args, *(train_ab.train_command(args, "/tmp/r", side) for side in "ab")


def test_train_ab_commands_and_table():
    args, a, b = _train_ab_commands(
        "--sync_bn", "--nosync_bn", "--strategy=mirrored --num_replicas=2"
    )
    assert a[:2] == ["tfresnet", "--dataset=fashion_mnist"] and "--strategy=mirrored" in a
    assert "--epochs=1" in a and "--overwrite" in a
    assert "--num_replicas=2" in b and set(a) ^ set(b) == {"--sync_bn", "--nosync_bn"}
    pairs = [
        {"a": {"images_per_s": 400.0}, "b": {"images_per_s": 500.0}},
        {"a": {"images_per_s": 500.0}, "b": {"images_per_s": 550.0}},
        {"a": {"images_per_s": 450.0}, "b": {"images_per_s": 450.0}},
    ]
    assert [round(train_ab.speedup(p), 3) for p in pairs] == [1.25, 1.1, 1.0]
    table = train_ab.format_table(pairs, "--sync_bn", "--nosync_bn").splitlines()
    assert table[0] == "| pair | a: `--sync_bn` img/s | b: `--nosync_bn` img/s | b / a |"
    assert table[2] == "| 1 | 400 | 500 | 1.250x |" and table[-1].endswith("**1.100x** |")
    header = train_ab.format_table(pairs, "TF_X=0", " ").splitlines()[0]
    assert header == "| pair | a: `TF_X=0` img/s | b: (defaults) img/s | b / a |"
    record = train_ab.records(args, pairs, train_ab.machine_context())[1]
    assert (record["a_flags"], record["b_flags"]) == ("--sync_bn", "--nosync_bn")
    assert record["cpus"] == os.cpu_count()
    assert record["started"].endswith("+00:00")  # UTC
    assert record["pair"] == 2 and record["b"] == {"images_per_s": 550.0}
    assert record["flags"] == "--strategy=mirrored --num_replicas=2"
    with pytest.raises(SystemExit):
        train_ab.parse_args(["--a=--sync_bn"])  # b is required


def test_a_setting_may_set_the_environment_of_its_runs():
    _, a, b = _train_ab_commands("TF_NUM_INTEROP_THREADS=1 --seed=2", "", "X=y --precision=float32")
    assert a[:4] == ["env", "X=y", "TF_NUM_INTEROP_THREADS=1", "tfresnet"]
    assert a[-2:] == ["--precision=float32", "--seed=2"]
    assert b[:3] == ["env", "X=y", "tfresnet"] and b[-1] == "--precision=float32"
    assert train_ab.split_setting("--a=b=c A1=2") == (["A1=2"], ["--a=b=c"])


def test_bench_ab_commands_and_refusals():
    one = "--flags=--models=resnet20 --precisions=float32"
    args = bench_ab.parse_args(["--a=--bn=keras", "--b=", one])
    a = bench_ab.bench_command(args, "/tmp/o.jsonl", "a")
    assert a[:3] == [sys.executable, "-m", "benchmarks.bench"] and "--output=/tmp/o.jsonl" in a
    assert a[-3:] == ["--models=resnet20", "--precisions=float32", "--bn=keras"]
    assert bench_ab.bench_command(args, "/tmp/o.jsonl", "b")[-1] == "--precisions=float32"
    for bad in (
        ["--a=", "--b=", "--flags=--models=resnet20,resnet56 --precisions=float32"],
        ["--a=", "--b=", "--flags=--models=resnet20"],
        ["--a=--precisions=mixed_bfloat16", "--b=", one],
        ["--a=", "--b=--output=/tmp/x.jsonl", one],
        ["--a=", "--b=", one, "--pairs=0"],
    ):
        with pytest.raises(SystemExit):
            bench_ab.parse_args(bad)


def test_ab_table_gives_each_comparisons_medians(tmp_path):
    rows = ab_table.format_table(ab_table.read_records([RECORDED / "train_ab.jsonl"])).splitlines()
    assert rows[2] == (  # the committed steps_per_execution A/B: 1180/1185/1125 -> 1151/1219/1211
        "| `--precision=mixed_bfloat16 --model=resnet20 --dataset=fashion_mnist` | (not recorded) "
        "| (not recorded) | 3 | training img/s | 1179.8 | 1211.3 | 1.029x |"
    )
    pair = {"flags": "--models=m", "a_flags": "", "b_flags": "X=1"}
    records = [
        {**pair, "a": {"images_per_s": 100.0, "infer_images_per_s": 10.0},
         "b": {"images_per_s": 50.0, "infer_images_per_s": 40.0}},
        {**pair, "a": {"images_per_s": 100.0, "infer_images_per_s": 10.0},
         "b": {"images_per_s": 70.0, "infer_images_per_s": 20.0}},
    ]  # fmt: skip
    rows = ab_table.format_table(records).splitlines()
    assert rows[2:] == [
        "| `--models=m` | (defaults) | `X=1` | 2 | training img/s | 100.0 | 60.0 | 0.600x |",
        "| `--models=m` | (defaults) | `X=1` | 2 | inference img/s | 10.0 | 30.0 | 3.000x |",
    ]


def test_bench_ab_skips_a_comparison_already_recorded(tmp_path, capsys):
    out = tmp_path / "knobs.jsonl"
    argv = ["--a=--bn=keras", "--b=", "--flags=--models=resnet20 --precisions=float32",
            f"--json_out={out}", "--skip_recorded", "--tfresnet=/no/such/tfresnet"]  # fmt: skip
    done = bench_ab.records(bench_ab.parse_args(argv), [{"a": {}, "b": {}}] * 2, {})
    out.write_text("".join(json.dumps(r) + "\n" for r in done[:1]))
    with pytest.raises(RuntimeError, match="cannot run /no/such/tfresnet"):
        bench_ab.main([*argv, "--pairs=2"])  # one pair of two recorded: measures again
    out.write_text("".join(json.dumps(r) + "\n" for r in done))
    assert bench_ab.main([*argv, "--pairs=2"]) == []  # both recorded: nothing to run
    assert capsys.readouterr().out.startswith(f"already in {out}")


def test_ab_table_refuses_what_is_not_a_pair_record(tmp_path):
    pair = '{"a": {"images_per_s": 1.0}, "b": {"images_per_s": 2.0}}'
    for lines, message in (
        ([], "holds no A/B pair records"),
        ([pair, "not json"], ":2: not JSON"),
        (["[1, 2]"], ":1: not an A/B pair record"),
        (['{"a": 5, "b": {}}'], ":1: not an A/B pair record"),
        ([pair.replace("2.0", "0")], ":1: images_per_s must be a positive number; got 0"),
        ([pair.replace("2.0", '"fast"')], "got 'fast'"),
    ):
        path = tmp_path / "ab.jsonl"
        path.write_text("".join(line + "\n" for line in lines))
        with pytest.raises(ValueError, match=message):
            ab_table.read_records([str(path)])


def test_the_drivers_refuse_settings_that_do_not_split_and_commands_that_do_not_run():
    for bad in (
        ["--a='x", "--b="],
        ["--a=", "--b=", '--flags="'],
        ["--a=", "--b=", "--tfresnet='"],
    ):
        with pytest.raises(SystemExit):
            train_ab.parse_args(bad)
    with pytest.raises(RuntimeError, match="t: cannot run /no/such/tfresnet train: "):
        end_to_end.run_process(["/no/such/tfresnet", "train"], label="t", echo=False)
    for script, bad in (("ab_table", []), ("paired_step_rate", ["--pairs=x"])):
        done = subprocess.run(_program(script, *bad), capture_output=True, text=True,
                              timeout=60, cwd=ROOT)  # fmt: skip
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"{script}.py: error: ") and "(see --help)" in done.stderr
    refused = {"returncode": 2, "output": "I0000 a TF line\nerror: Unknown model 'x'.\n"}
    err = end_to_end.failed("benchmarks.bench", ["bench"], refused)
    assert isinstance(err, end_to_end.Refused)
    assert str(err) == "benchmarks.bench refused the flags given: Unknown model 'x'."
    crashed = end_to_end.failed("tfresnet bench", ["tfresnet"], {**refused, "returncode": 1})
    assert not isinstance(crashed, end_to_end.Refused) and "--- last lines ---" in str(crashed)


def test_every_comparison_of_the_knobs_script_is_valid():
    script = repo_file("benchmarks/knobs.sh").read_text().replace("\\\n", " ")
    variables = dict(re.findall(r'^(R20_\w+)="([^"]*)"$', script, re.M))
    lines = [line for line in script.splitlines() if line.startswith("ab ")]
    assert len(lines) == 7
    for line in lines:
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        args = bench_ab.parse_args([*shlex.split(line.split("#")[0])[1:], "--tfresnet=bench"])
        for side in "ab":
            words = bench_ab.bench_command(args, "/tmp/o", side)
            fv = flags.FlagValues()
            bench.define_flags(fv)
            fv(["bench", *words[words.index("bench") + 1 :]])  # a misspelling raises


@pytest.mark.slow
def test_bench_ab_runs_pairs_of_quick_benchmarks(tmp_path):
    out = tmp_path / "ab.jsonl"
    command = _program(
        "bench_ab", "--a=--bn=keras", "--b=--bn=fused",
        "--flags=--quick --models=cifar_resnet8 --precisions=float32", "--pairs=1",
        f"--json_out={out}",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("| median |") == 3
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["a_flags"], record["b_flags"]) == ("--bn=keras", "--bn=fused")
    assert record["a"]["record"]["bn"] == "keras" and record["b"]["record"]["bn"] == "fused"
    for side in "ab":
        assert record[side]["images_per_s"] > 0 and record[side]["infer_images_per_s"] > 0
        assert record[side]["onednn_opts"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")


@pytest.mark.slow
def test_end_to_end_runs_both_on_small_idx_files(tmp_path, peer):
    folder = tmp_path / "fashion-tiny"
    write_mnist_folder(folder, n_train=160, n_test=40, size=8, classes=3)
    out = tmp_path / "e2e.jsonl"
    command = _program(
        "end_to_end", "--epochs=1", "--pairs=1", f"--data_dir={folder}", "--quiet",
        f"--json_out={out}", f"--work_dir={tmp_path}", "--tfresnet_args=--noexport",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| median |" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["tfresnet", "torch", "summary"]
    for record in records[:2]:
        assert 0 <= record["test_error"] <= 1 and record["peak_rss_mb"] > 100
        assert record["wall_s"] > 0 and record["load1"] >= 0
    assert records[2]["ratios"] == [round(records[1]["wall_s"] / records[0]["wall_s"], 3)]
    assert not list(tmp_path.glob("e2e-tfresnet-*"))  # run directories cleaned up


@pytest.mark.slow  # times a torchvision ResNet-50 step
def test_torchvision_peer_prints_one_line_of_rates():
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install -e '.[bench]'")
    command = _program(
        "torchvision_resnet50_bench", "--image_size=32", "--batch_size=2", "--steps=1",
        "--repeats=1", "--warmup=1", "--precision=fp32", "--device=cpu",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["peer"] == "torchvision" and record["model"] == "resnet50"
    assert (record["precision"], record["image_size"], record["batch_size"]) == ("fp32", 32, 2)
    # torchvision's net, or the stand-in: the same ResNet-50 as tfresnet's, parameter for parameter
    ours = models.build_model("resnet50", input_shape=(32, 32, 3))
    assert record["params"] == models.count_params(ours) == 25_557_032
    assert record["train_img_s"] > 0 and record["infer_img_s"] > 0


# --- paired_step_rate.py --------------------------------------------------------------------

RECORDED = repo_file("docs/bench")
# The three paired runs behind docs/performance.md's ratio table (made with a `tfresnet bench`
# flag of the time): one full run and two of the CIFAR nets, each a pair.
RECORDED_PAIRS = (
    "2026-11-25-1849-paired.jsonl",
    "2026-11-25-1911-cifar-paired.jsonl",
    "2026-11-25-1916-cifar-paired.jsonl",
)


def test_paired_table_gives_the_recorded_runs_ratios_and_medians():
    pairs = [paired.json_records((RECORDED / name).read_text()) for name in RECORDED_PAIRS]
    rows = {(r["model"], r["precision"]): r for r in paired.summary(pairs)}
    assert list(rows) == [
        (model, precision)
        for model in ("resnet20", "resnet56", "resnet50")
        for precision in ("float32", "mixed_bfloat16")
    ]  # keras_resnet50 has no peer
    resnet20 = rows["resnet20", "float32"]
    assert resnet20["pairs"] == 3
    assert resnet20["train_ratios"] == pytest.approx(
        [1.047, 1.016, 1.217], abs=5e-4
    )  # 636.34 / 607.8, ...
    assert (resnet20["train_ratio"], resnet20["infer_ratio"]) == pytest.approx(
        (1.047, 1.119), abs=5e-4
    )
    # each side's median rate over the pairs, not the rates of the median pair
    assert (resnet20["tfresnet_train_img_s"], resnet20["peer_train_img_s"]) == (636.34, 596.9)
    assert rows["resnet20", "mixed_bfloat16"]["train_ratios"] == pytest.approx(
        [0.906, 1.144, 1.414], abs=5e-4
    )
    assert rows["resnet56", "mixed_bfloat16"]["infer_ratios"] == pytest.approx(
        [1.08, 1.07, 1.235], abs=5e-4
    )
    resnet50 = rows["resnet50", "float32"]
    assert resnet50["pairs"] == 1
    assert (resnet50["train_ratio"], resnet50["infer_ratio"]) == pytest.approx(
        (1.264, 1.15), abs=5e-4
    )
    table = paired.format_table(pairs).splitlines()
    assert len(table) == 2 + 6
    assert table[2] == (
        "| resnet20 | float32 | 636.3 | 596.9 | 1.05, 1.02, 1.22 | **1.05x** "
        "| 2265.9 | 2017.6 | 1.12, 1.04, 1.19 | **1.12x** |"
    )


def test_summarize_tabulates_the_recorded_runs_of_the_docs(capsys, tmp_path):
    """The docstring's --summarize command: the 18:08 bench with its PyTorch run as a pair."""
    full = f"{RECORDED / '2026-11-25-1808-full.jsonl'}+{RECORDED / '2026-11-25-1828-torch.jsonl'}"
    pairs = paired.main(["--summarize", full, *(str(RECORDED / n) for n in RECORDED_PAIRS)])
    assert len(pairs) == 4
    rows = {(r["model"], r["precision"]): r for r in paired.summary(pairs)}
    resnet56 = rows["resnet56", "mixed_bfloat16"]
    assert resnet56["train_ratios"] == pytest.approx(
        [0.905, 1.192, 1.086, 0.999], abs=5e-4
    )  # 313.9/346.7
    assert (resnet56["train_ratio"], resnet56["infer_ratio"]) == pytest.approx(
        (1.043, 1.084), abs=5e-4
    )
    assert rows["resnet50", "mixed_bfloat16"]["infer_ratios"] == pytest.approx(
        [1.436, 1.19], abs=5e-4
    )
    printed = capsys.readouterr().out
    assert printed.startswith("tfresnet / PyTorch images per second, 4 recorded pairs:")
    both = tmp_path / "two-pairs.jsonl"  # what --json_out writes: pairs told apart by "pair"
    with open(both, "w") as f:
        for i, name in enumerate(RECORDED_PAIRS[1:], 1):
            for record in paired.json_records((RECORDED / name).read_text()):
                f.write(json.dumps({**record, "pair": i}) + "\n")
    assert len(paired.recorded_pairs(str(both))) == 2
    assert "| resnet20 | float32 | 649.2 | 602.3 | 1.11, 1.05, 1.02, 1.22 | **1.08x** |" in printed
    (tmp_path / "zero.jsonl").write_text(
        (RECORDED / "2026-11-25-1849-paired.jsonl")
        .read_text()
        .replace('"train_img_s": 292.0', '"train_img_s": 0')
    )
    for bad, message in (
        (str(tmp_path / "none.jsonl"), "cannot read '.*none.jsonl'"),
        (f"+{RECORDED / 'end_to_end.jsonl'}", "cannot read ''"),
        (str(RECORDED / "end_to_end.jsonl"), "holds no model measured by both"),
        (str(tmp_path / "zero.jsonl"), "a record lacks a positive rate"),
    ):
        with pytest.raises(RuntimeError, match=message):
            paired.main(["--summarize", bad])


def test_peer_lines_are_read_with_keras_precision_names():
    output = "\n".join(
        [
            "a log line",
            '{"peer": "torch", "model": "resnet20", "precision": "fp32", "train_img_s": 4.0, '
            '"infer_img_s": 10.0}',
            '{"peer": "torch", "model": "resnet20", "precision": "bf16", "train_img_s": 8.0, '
            '"infer_img_s": 20.0}',
            '{"peer": "torch", "model": "resnet56", "precision": "fp32", "train_img_s": 1.0, '
            '"infer_img_s": 2.0}',
            "[1, 2]",
        ]
    )
    records = paired.peer_records(output, "resnet20", ["float32"])
    assert records == [
        {"peer": "torch", "model": "resnet20", "precision": "float32", "train_img_s": 4.0,
         "infer_img_s": 10.0, "kind": "peer"},
    ]  # fmt: skip
    both = paired.peer_records(output, "resnet20", ["float32", "mixed_bfloat16"])
    assert [r["precision"] for r in both] == ["float32", "mixed_bfloat16"]


def test_paired_commands_and_flag_errors(capsys):
    paired.main(["--dry_run", "--models=resnet20,resnet50", "--precisions=float32"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith(
        "-m benchmarks.bench --models=resnet20 --precisions=float32 --nopipeline "
        "--output=TMP/bench.jsonl"
    )
    assert lines[1].endswith("-m benchmarks.torch_resnet_bench resnet20")
    assert "--models=resnet50" in lines[2] and lines[3].endswith("torch_resnet_bench resnet50")
    for argv, message in (
        (["--precisions=mixed_float16"], "'mixed_float16' has no peer"),
        (["--models=keras_resnet50"], "the PyTorch peer has resnet20, resnet56, resnet50"),
        (["--pairs=0"], "--pairs must be >= 1"),
    ):
        with pytest.raises(SystemExit):
            paired.parse_args(argv)
        assert message in capsys.readouterr().err


FAKE_TFRESNET = """
import json, sys
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
assert "--nopipeline" in sys.argv, sys.argv
with open(flags["output"], "w") as f:
    f.write(json.dumps({"kind": "host", "cores": 2}) + "\\n")
    for precision in flags["precisions"].split(","):
        f.write(json.dumps({"kind": "model", "model": flags["models"], "precision": precision,
                            "train_img_s": 6.0, "infer_img_s": 30.0}) + "\\n")
"""
FAKE_PEER = """
import json, sys
if sys.argv[1] == "broken":
    sys.exit("torch is not installed")
print("some log line")
for precision, train, infer in (("fp32", 4.0, 10.0), ("bf16", 8.0, 20.0)):
    print(json.dumps({"peer": "fake", "model": sys.argv[1], "precision": precision,
                      "train_img_s": train, "infer_img_s": infer}))
"""


def test_paired_run_alternates_the_programs_and_writes_every_record(tmp_path, capsys):
    (tmp_path / "tfresnet.py").write_text(FAKE_TFRESNET)
    (tmp_path / "peer.py").write_text(FAKE_PEER)
    out = tmp_path / "paired.jsonl"
    common = [
        f"--tfresnet={sys.executable} {tmp_path / 'tfresnet.py'}", f"--peer={tmp_path / 'peer.py'}",
        "--precisions=float32",
    ]  # fmt: skip
    pairs = paired.main([*common, "--models=a,b", "--pairs=2", f"--json_out={out}"])
    assert len(pairs) == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [(r["kind"], r.get("model"), r.get("pair")) for r in records]
    one = [("host", None), ("model", "a"), ("peer", "a"), ("host", None), ("model", "b"),
           ("peer", "b")]  # fmt: skip
    assert kinds == [(*k, 1) for k in one] + [(*k, 2) for k in one] + [("summary", None, None)]
    assert {r["precision"] for r in records if r["kind"] == "peer"} == {"float32"}
    [a, b] = records[-1]["rows"]
    assert (a["model"], a["pairs"], a["train_ratios"], a["train_ratio"]) == ("a", 2, [1.5] * 2, 1.5)
    assert (b["infer_ratio"], b["tfresnet_infer_img_s"], b["peer_infer_img_s"]) == (3, 30, 10)
    row = "| a | float32 | 6.0 | 4.0 | 1.50, 1.50 | **1.50x** | 30.0 | 10.0 | 3.00, 3.00 |"
    assert row in capsys.readouterr().out
    failed = "(?s)the PyTorch peer exited with 1: .*peer.py broken.*torch is not installed"
    with pytest.raises(RuntimeError, match=failed):
        paired.main([*common, "--models=broken", "--pairs=1"])


@pytest.mark.slow  # a fresh TensorFlow process and the PyTorch ResNet-20 at batch 128
def test_paired_run_of_the_bench_and_the_torch_peer(peer, tmp_path):
    out = tmp_path / "paired.jsonl"
    command = _program(
        "paired_step_rate", "--models=resnet20", "--precisions=float32", "--pairs=1",
        "--tfresnet_args=--quick", f"--json_out={out}",
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["host", "matmul_peak", "model", "peer", "summary"]
    ours, torch_line, [row] = records[2], records[3], records[4]["rows"]
    assert ours["quick"] and (ours["model"], ours["precision"]) == ("resnet20", "float32")
    assert torch_line["peer"] == "torch" and torch_line["batch"] == 128
    assert row["train_ratio"] == pytest.approx(ours["train_img_s"] / torch_line["train_img_s"])
    assert "| resnet20 | float32 |" in done.stdout


def test_paired_driver_knows_the_torch_peers_models():
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install -e '.[bench]'")
    from benchmarks import torch_resnet_bench

    assert tuple(torch_resnet_bench.CONFIGS) == paired.PEER_MODELS
