import json
import re

import keras
import pytest

from benchmarks import bench
from tfresnet import layers, models

MODEL_FIELDS = (
    "params",
    "macs",
    "train_img_s",
    "train_img_cpu_s",
    "infer_img_s",
    "infer_unfolded_img_s",
    "train_gflop_s",
    "infer_gflop_s",
    "peak_rss_mb",
    "peak_fraction",
)


@pytest.mark.slow  # a fresh process per model
def test_quick_mode_prints_json_lines_with_positive_figures_and_a_table(tmp_path, capfd):
    out = tmp_path / "bench.jsonl"
    assert bench.main(["--quick", "--precisions=float32", f"--output={out}"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["bench.jsonl"]  # renamed whole at the end
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_kind = {r["kind"]: r for r in records}
    assert set(by_kind) == {"host", "matmul_peak", "input_pipeline", "model"}
    model = by_kind["model"]
    assert (model["model"], model["precision"], model["bn"]) == ("resnet8", "float32", "fused")
    assert all(model[field] > 0 for field in MODEL_FIELDS), model
    # Training counts 3x the forward FLOPs of each image; the fraction is of the matmul peak.
    train_flops = 3 * 2 * model["macs"] * model["train_img_s"]
    assert model["train_gflop_s"] == pytest.approx(train_flops / 1e9, rel=1e-2)
    assert model["peak_fraction"] == pytest.approx(
        model["train_gflop_s"] / by_kind["matmul_peak"]["gflop_s"], abs=2e-3
    )
    assert by_kind["matmul_peak"]["gflop_s"] > 0 and by_kind["input_pipeline"]["img_s"] > 0
    printed = capfd.readouterr()
    assert "| resnet8 | float32 | fused | 16 | 8 |" in printed.out
    # The fresh process's TensorFlow start-up notices are hidden (tests run at level 2).
    assert not re.search(r"^[IW]\d{4} |^WARNING: All log messages", printed.err, re.M), printed.err


def test_bn_flag_picks_the_fused_layer_or_keras_own():
    fused, reference = bench.build("resnet8", 8, "fused"), bench.build("resnet8", 8, "keras")
    assert type(fused.get_layer("stem_bn")) is layers.BatchNormalization
    assert type(reference.get_layer("stem_bn")) is keras.layers.BatchNormalization
    assert models.count_flops(fused) == models.count_flops(reference)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--precisions=float8"], "Unknown precision 'float8'; allowed: float32"),
        (["--models=resnet7"], "Unknown model name|depth must be 6n\\+2"),
        (["--bn=torch"], "bn"),
        (["--models="], "at least one model and one precision"),
        (["--quick", "--image_size=2"], "Input 2x2 is too small for resnet8: .* at least 4"),
        (["resnet20"], "takes flags only"),
    ],
)
def test_bad_flags_exit_2_with_what_is_allowed(argv, message, capsys, tmp_path):
    output = tmp_path / "bench.jsonl"
    assert bench.main([*argv, f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1, err  # one line
    assert not list(tmp_path.iterdir())  # refused before anything is measured or written


def test_an_output_that_is_a_directory_is_refused_before_measuring(tmp_path, capsys):
    assert bench.main(["--quick", f"--output={tmp_path}"]) == 2
    assert "is a directory; give a file name" in capsys.readouterr().err


def test_a_custom_spec_is_benchmarked_like_a_table_name():
    spec = "resnet20:width_multiplier=2"
    config = bench.BenchConfig(models=(spec,))
    case = bench.case_for(spec, config)
    assert (case.image_size, case.batch_size) == (32, 128)  # a CIFAR net: measured at 32x32
    with pytest.raises(ValueError, match="width multiplier must be a number > 0"):
        bench.BenchConfig(models=("resnet20:width_multiplier=-1",))
