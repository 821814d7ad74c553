"""benchmarks/: the PyTorch peer trainer (its augmentation, schedule, model and a 1-epoch run on
small IDX files written here) and the end-to-end driver (commands, measuring, the table).

The peer's tests need torch (`pip install -e '.[bench]'`) and skip without it."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_idx import write_mnist_folder

from tfresnet import models, recipes

# resolve(): under `bazel test` this file is a symlink into the checkout.
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PEER = BENCHMARKS / "torch_fashion_mnist_train.py"
PEER_KEYS = {
    "peer", "epochs", "wall_s", "startup_s", "train_s", "eval_s", "test_error", "train_error",
    "peak_rss_mb", "images_per_s",
}  # fmt: skip


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peer():
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install -e '.[bench]'")
    return _load(PEER)


@pytest.fixture(scope="module")
def end_to_end():
    return _load(BENCHMARKS / "end_to_end.py")


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
    command = [
        sys.executable, str(PEER), "--epochs=1", "--batch_size=32", "--threads=1",
        f"--data_dir={folder}", "--limit_train=64", "--limit_test=20",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
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


def test_end_to_end_commands(end_to_end, capsys):
    end_to_end.main(["--dry_run", "--epochs=2", "--precision=mixed_bfloat16", "--seed=3"])
    tf_line, torch_line = capsys.readouterr().out.strip().splitlines()
    for flag in ("train", "--dataset=fashion_mnist", "--model=resnet20", "--epochs=2",
                 "--overwrite", "--precision=mixed_bfloat16", "--seed=3"):  # fmt: skip
        assert f" {flag}" in tf_line
    assert "torch_fashion_mnist_train.py --epochs=2 --precision=bf16 --seed=3" in torch_line


def test_run_process_measures_that_child(end_to_end):
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


def test_table_and_medians(end_to_end):
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


@pytest.mark.slow
def test_end_to_end_runs_both_on_small_idx_files(tmp_path, peer):
    folder = tmp_path / "fashion-tiny"
    write_mnist_folder(folder, n_train=160, n_test=40, size=8, classes=3)
    out = tmp_path / "e2e.jsonl"
    command = [
        sys.executable, str(BENCHMARKS / "end_to_end.py"), "--epochs=1", "--pairs=1",
        f"--data_dir={folder}", "--quiet", f"--json_out={out}", f"--work_dir={tmp_path}",
        "--tfresnet_args=--noexport",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| median |" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["tfresnet", "torch", "summary"]
    for record in records[:2]:
        assert 0 <= record["test_error"] <= 1 and record["peak_rss_mb"] > 100
        assert record["wall_s"] > 0 and record["load1"] >= 0
    assert records[2]["ratios"] == [round(records[1]["wall_s"] / records[0]["wall_s"], 3)]
    assert not list(tmp_path.glob("e2e-tfresnet-*"))  # run directories cleaned up


def test_torchvision_peer_prints_one_line_of_rates():
    pytest.importorskip("torch", reason="the PyTorch peer needs torch: pip install -e '.[bench]'")
    command = [
        sys.executable, str(BENCHMARKS / "torchvision_resnet50_bench.py"), "--image_size=32",
        "--batch_size=2", "--steps=1", "--repeats=1", "--warmup=1", "--precision=fp32",
        "--device=cpu",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["peer"] == "torchvision" and record["model"] == "resnet50"
    assert (record["precision"], record["image_size"], record["batch_size"]) == ("fp32", 32, 2)
    # torchvision's net, or the stand-in: the same ResNet-50 as tfresnet's, parameter for parameter
    ours = models.build_model("resnet50", input_shape=(32, 32, 3))
    assert record["params"] == models.count_params(ours) == 25_557_032
    assert record["train_img_s"] > 0 and record["infer_img_s"] > 0
