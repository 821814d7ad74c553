"""Every experiment script runs end to end in its smoke mode (depth-8 nets, 2 iterations)."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
from absl import flags

from experiments import (
    common,
    degradation,
    depth,
    kernel_norms,
    layer_responses,
    shattered_gradients,
    shortcuts,
)
from tfresnet import layers as tfresnet_layers
from tfresnet import machine, models
from tfresnet import train as train_lib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESNET8_PARAMS = 75_002  # cifar_resnet8 on 8x8x1 digits; option A adds no parameters


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return common.Settings(
        smoke=True, depths=(common.SMOKE_DEPTH,), results_dir=str(tmp_path_factory.mktemp("res"))
    )


@pytest.fixture(scope="module")
def degradation_result(settings):
    return degradation.run(settings)


def _check_outputs(result, *rows):
    table = open(result["table"]).read()
    assert "Data set: digits" in table and "Command: `python -m experiments." in table
    for row in rows:
        assert f"| {row} |" in table, row
    _check_png(result["plot"])


def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_degradation_trains_plain_and_resnet_and_writes_table_and_plot(degradation_result):
    result = degradation_result
    _check_outputs(result, "plain-8 | 75,002", "ResNet-8 | 75,002")
    assert os.path.basename(result["plot"]) == "digits-smoke-1seed.png"
    assert set(result["runs"]) == {("plain", 8), ("resnet", 8)}
    for (kind, _), [run] in result["runs"].items():
        assert run["config"]["model"] == f"{kind}8"
        assert run["model"]["params"] == RESNET8_PARAMS
        assert run["schedule"]["steps"] == 2  # 1 epoch of 1,438 images at batch 512
        assert len(run["curves"]["train_error"]) == len(run["curves"]["test_error"]) == 1
        assert 0.0 <= run["final"]["test_error"] <= 1.0
        assert os.path.isfile(os.path.join(run["config"]["run_dir"], "results.json"))
    # ResNets first (a session cut short has the comparison that matters most), then plain nets
    trained = [os.path.basename(d) for d in result["trained"]]
    assert trained == ["resnet8-digits-smoke-seed0", "plain8-digits-smoke-seed0"]


def test_rerunning_reuses_finished_runs(settings, degradation_result):
    run_dir = degradation_result["runs"]["resnet", 8][0]["config"]["run_dir"]
    results_json = os.path.join(run_dir, "results.json")
    mtime = os.stat(results_json).st_mtime_ns
    again = degradation.run(settings)
    assert again["trained"] == []  # nothing trained the second time
    assert os.stat(results_json).st_mtime_ns == mtime
    final = degradation_result["runs"]["resnet", 8][0]["final"]
    assert again["runs"]["resnet", 8][0]["final"]["test_error"] == final["test_error"]


@pytest.mark.slow  # four smoke trainings
def test_shortcuts_table_counts_parameters_and_reuses_the_shared_nets(settings, degradation_result):
    result = shortcuts.run(settings)
    # plain-8 and ResNet-8 (option A) come from the degradation runs; only B and C train.
    new = [os.path.basename(d) for d in result["trained"]]
    assert new == ["resnet8-B-digits-smoke-seed0", "resnet8-C-digits-smoke-seed0"]
    copied = result["runs"][8, "A"][0]
    assert copied["reused_from"].endswith(os.path.join("degradation", "resnet8-digits-smoke-seed0"))
    final = degradation_result["runs"]["resnet", 8][0]["final"]
    assert copied["final"]["test_error"] == final["test_error"]
    params = {option: runs[0]["model"]["params"] for (_, option), runs in result["runs"].items()}
    # B: 1x1 conv + BN where 16->32 and 32->64; C: on every block (also 16->16 in stage 1).
    projections_b = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert params == {
        "none": RESNET8_PARAMS,
        "A": RESNET8_PARAMS,
        "B": RESNET8_PARAMS + projections_b,
        "C": RESNET8_PARAMS + projections_b + 16 * 16 + 2 * 16,
    }
    _check_outputs(result, "plain-8 | none | 75,002", "ResNet-8 | B | 77,754", "ResNet-8 | C")


def test_a_copy_killed_midway_leaves_no_run_and_the_next_call_copies_it_whole(
    settings, degradation_result, monkeypatch
):
    config = common.run_config(settings, "copied", "resnet8", 0)
    source = degradation_result["runs"]["resnet", 8][0]["config"]["run_dir"]
    real_copy = common.shutil.copy2

    def killed(src, dst):
        if src.endswith("history.csv"):
            raise KeyboardInterrupt("simulated kill while copying")
        return real_copy(src, dst)

    monkeypatch.setattr(common.shutil, "copy2", killed)
    with pytest.raises(KeyboardInterrupt):
        common.train_or_load(config, settings.results_dir)
    folder = os.path.dirname(config.run_dir)
    assert not os.path.exists(config.run_dir)  # no config.json that a resume would train from
    (stale,) = os.listdir(folder)
    assert "model.keras" in os.listdir(os.path.join(folder, stale))
    monkeypatch.undo()
    results, trained = common.train_or_load(config, settings.results_dir)
    assert not trained and os.listdir(folder) == [os.path.basename(config.run_dir)]
    assert sorted(os.listdir(config.run_dir)) == sorted(common.COPIED_FILES)
    assert results["reused_from"] == os.path.relpath(source, config.run_dir)
    with (
        open(os.path.join(source, "history.csv")) as a,
        open(os.path.join(config.run_dir, "history.csv")) as b,
    ):
        assert a.read() == b.read()


def test_a_copy_keeps_the_config_the_run_was_trained_with(settings, degradation_result):
    """A copy found for a command that differs only in a speed setting says, in config.json as
    in results.json, what the run was trained with, not what the copying command asked for."""
    source = degradation_result["runs"]["resnet", 8][0]["config"]["run_dir"]
    config = common.run_config(settings, "recopied", "resnet8", 0)
    asked = dataclasses.replace(config, steps_per_execution=2)  # not an identity field
    results, trained = common.train_or_load(asked, settings.results_dir)
    assert not trained
    with open(os.path.join(source, "config.json")) as f:
        trained_with = json.load(f)
    with open(os.path.join(config.run_dir, "config.json")) as f:
        copied = json.load(f)
    assert copied == {**trained_with, "run_dir": config.run_dir}
    assert copied["steps_per_execution"] == results["config"]["steps_per_execution"] is None


def test_a_folder_with_files_but_no_run_is_not_overwritten_by_a_copy(settings, degradation_result):
    config = common.run_config(settings, "cluttered", "resnet8", 0)
    os.makedirs(config.run_dir)
    with open(os.path.join(config.run_dir, "notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(train_lib.TrainingError, match="holds files but no run .*remove it"):
        common.train_or_load(config, settings.results_dir)
    assert os.listdir(config.run_dir) == ["notes.txt"]


def test_depth_table(settings, degradation_result):
    result = depth.run(settings)
    assert result["trained"] == []  # ResNet-8 is the degradation run
    _check_outputs(result, "ResNet-8 | 75,002")
    table = open(result["table"]).read()
    assert "paper: CIFAR-10 test error (%)" in table and "model.fit over 1 run (" in table


def test_hardware_line_names_the_machines_the_runs_trained_on():
    here = machine.cpu_info().describe()
    moved = {"segments": [{"hardware": "2-core CPU (B)"}, {"hardware": "2-core CPU (A)"}]}
    older = {"segments": [{"first_epoch": 1, "wall_s": 3.0}]}  # from before segments said
    assert common.hardware([moved, moved]) == "2-core CPU (A); 2-core CPU (B)"
    assert common.hardware([moved, older]) == "; ".join(
        sorted(["2-core CPU (A)", "2-core CPU (B)", here])
    )
    assert common.hardware() == here


def test_zoomed_error_axis_is_twice_the_largest_final_error_rounded_up_to_5():
    def net(*finals):  # finals: (training, test) error of each seed
        return [{"curves": {"train_error": [0.9, a], "test_error": [0.8, b]}} for a, b in finals]

    assert common.zoomed_top([("a", net((0.0182, 0.0525)))]) == 15  # 10.5 -> 15
    assert common.zoomed_top([("a", net((0.02, 0.05))), ("b", net((0.07, 0.0751)))]) == 20
    assert common.zoomed_top([("a", net((0.01, 0.05), (0.03, 0.10)))]) == 15  # seeds' mean 7.5
    assert common.zoomed_top([("a", net((0.38, 0.36)))]) == 80
    assert common.zoomed_top([("a", net((0.6, 0.5)))]) == 100
    assert common.zoomed_top([("a", net((0.0, 0.0)))]) == 5


def test_a_kill_while_a_table_or_plot_is_written_leaves_the_old_file(
    settings, degradation_result, monkeypatch
):
    result = depth.run(settings)
    before = {path: open(path, "rb").read() for path in (result["table"], result["plot"])}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill before the rename")

    monkeypatch.setattr(common.files.tf.io.gfile, "rename", killed)
    runs = [run for seeds in result["runs"].values() for run in seeds]
    with pytest.raises(KeyboardInterrupt):
        common.write_report(settings, depth.EXPERIMENT, "| new |", depth.DEPTHS, runs)
    fig, _ = common.figure(1)
    with pytest.raises(KeyboardInterrupt):
        common.save_figure(fig, settings, depth.EXPERIMENT)
    for path, content in before.items():
        assert open(path, "rb").read() == content, path
    folder = os.path.dirname(result["table"])
    assert not [name for name in os.listdir(folder) if common.files.TEMP_MARK in name]


def test_layer_responses_are_one_std_per_3x3_layer():
    images = np.random.default_rng(0).uniform(0, 255, (20, 8, 8, 1)).astype("float32")
    resnet8 = models.build_model("cifar_resnet8", input_shape=(8, 8, 1))
    responses = layer_responses.layer_responses(resnet8, images, batch_size=8)
    # The stem conv, then 3 stages x 1 block x 2 convs.
    assert list(responses) == [
        "stem_bn",
        *(f"stage{s}_block1_bn{i}" for s in (1, 2, 3) for i in (1, 2)),
    ]
    assert all(np.isfinite(v) and v > 0 for v in responses.values())
    # The std of one layer, per channel over images and positions, then averaged over channels.
    probe = keras.Model(resnet8.input, resnet8.get_layer("stage2_block1_bn2").output)
    expected = np.asarray(probe(images, training=False)).std(axis=(0, 1, 2)).mean()
    assert responses["stage2_block1_bn2"] == pytest.approx(expected, rel=1e-4)
    resnet20 = models.build_model("resnet20", input_shape=(8, 8, 1))
    assert len(layer_responses.layer_responses(resnet20, images)) == 1 + 18
    plain20 = models.build_model("plain20", input_shape=(8, 8, 1))
    assert len(layer_responses.response_layer_names(plain20)) == 19
    preact = models.build_model("cifar_resnet8", input_shape=(8, 8, 1), preact=True)
    with pytest.raises(ValueError, match="post-activation"):
        layer_responses.response_layer_names(preact)


@pytest.mark.slow  # the layer-response unit test stays
def test_layer_responses_experiment_measures_the_degradation_nets(settings, degradation_result):
    result = layer_responses.run(settings)
    assert result["trained"] == []
    assert {key: len(v) for key, v in result["responses"].items()} == {
        ("plain", 8): 7,
        ("resnet", 8): 7,
    }
    _check_outputs(result, "plain-8 | 7", "ResNet-8 | 7")


@pytest.mark.slow  # the layer-response unit test stays
def test_layer_responses_are_kept_beside_each_run_for_a_clone_without_models(
    settings, degradation_result
):
    first = layer_responses.measure(settings, degradation_result["runs"])
    run_dir = degradation_result["runs"]["resnet", 8][0]["config"]["run_dir"]
    model, hidden = os.path.join(run_dir, "model.keras"), os.path.join(run_dir, "hidden.keras")
    os.rename(model, hidden)  # as in a fresh clone: git keeps the JSON, not the model
    try:
        again = layer_responses.measure(settings, degradation_result["runs"])
        assert {k: list(v) for k, v in again.items()} == {k: list(v) for k, v in first.items()}
        os.remove(os.path.join(run_dir, layer_responses.RESPONSES))
        with pytest.raises(FileNotFoundError, match="no layer_responses.json beside it"):
            layer_responses.measure(settings, degradation_result["runs"])
    finally:
        os.rename(hidden, model)
    assert len(layer_responses.measure(settings, degradation_result["runs"])["resnet", 8]) == 7
    saved = json.loads(open(os.path.join(run_dir, layer_responses.RESPONSES)).read())
    assert saved["dataset"] == settings.dataset and len(saved["responses"]) == 7


def test_main_reads_the_flags(settings, degradation_result, capsys):
    argv = ["degradation", "--smoke", f"--results_dir={settings.results_dir}"]
    flags.FLAGS(argv)
    try:
        degradation.main(argv)
    finally:
        flags.FLAGS.unparse_flags()
    printed = capsys.readouterr().out
    assert "| ResNet-8 | 75,002 |" in printed
    assert "Trained 0 runs here; the others were finished and reused." in printed


def test_kernel_norms_experiment_reads_the_recorded_decay_term(settings, degradation_result):
    result = kernel_norms.run(settings)
    assert result["trained"] == []
    run = degradation_result["runs"]["resnet", 8][0]
    [entry] = result["norms"]["resnet", 8]
    decay = run["schedule"]["weight_decay"]
    expected = 2 * run["curves"]["weight_decay_loss"][0] / decay
    assert entry["exact"].all() and entry["high"][0] == pytest.approx(expected)
    # cifar_resnet8: 3x3 convs out 16 (stem + 2), 32 (2), 64 (2); 10 logits; 2 per channel.
    assert entry["init"] == 2 * (3 * 16 + 2 * 32 + 2 * 64 + 10)
    _check_outputs(result, f"ResNet-8, seed 0 | 0.50 | **{expected / 1000:.2f}**")


@pytest.mark.parametrize(
    "flag_args, message",
    [
        (["--budget=0.1", "--epochs=3"], "Give at most one of --budget and --epochs."),
        (["--depths=20,abc"], "--depths takes whole numbers such as 20,56; got '20,abc'."),
        (["--depths=21"], "6n\\+2"),
        (["--precision=mixed_bfloat16"], "trains nothing, so --precision would be ignored"),
    ],
)
def test_bad_flags_are_one_line_and_exit_status_2(tmp_path, capsys, flag_args, message):
    experiment = shattered_gradients if "--precision" in flag_args[0] else depth
    argv = ["experiment", *flag_args, f"--results_dir={tmp_path}"]
    flags.FLAGS(argv)
    try:
        with pytest.raises(SystemExit) as exit_info:
            experiment.main(argv)
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(f"error: .*{message}.*", line)
    assert os.listdir(tmp_path) == []  # nothing written


def test_settings_budget_labels_and_commands():
    default = common.Settings(depths=(20, 56))
    assert default.budget == common.DEFAULT_BUDGET and default.label == "b0.005"
    assert default.tag == "digits-b0.005-1seed"
    assert common.command("degradation", default, (20, 56)) == "python -m experiments.degradation"
    other = common.Settings(epochs=12, seeds=3, depths=(20,))
    assert other.label == "e12"
    assert (
        common.command("depth", other, (20, 32))
        == "python -m experiments.depth --epochs=12 --seeds=3 --depths=20"
    )
    with pytest.raises(ValueError, match="at most one"):
        common.Settings(budget=0.1, epochs=3)
    config = common.run_config(common.Settings(budget=0.01), "depth", "resnet110", 2)
    assert config.budget == 0.01 and config.epochs is None and config.seed == 2
    assert config.run_dir.endswith(os.path.join("depth", "resnet110-digits-b0.01-seed2"))


def test_degradation_verdict_compares_the_deepest_with_the_shallowest():
    def runs(error):
        return [{"final": {"train_error": error}, "data": {"sizes": {"train": 1000}}}]

    fake = {
        ("plain", 20): runs(0.02),
        ("plain", 56): runs(0.10),
        ("resnet", 20): runs(0.03),
        ("resnet", 56): runs(0.01),
    }
    assert degradation.verdict(fake, (20, 56)).splitlines() == [
        "plain-56 minus plain-20, final training error: +8.00 points "
        "(+80 of 1,000 training images; deeper is worse).",
        "ResNet-56 minus ResNet-20, final training error: -2.00 points "
        "(-20 of 1,000 training images; deeper is no worse).",
    ]
    assert degradation.verdict(fake, (20,)) == ""


@pytest.mark.slow  # the smoke run; its measures stay tested
def test_shattered_gradients_plain_nets_decorrelate_faster_than_resnets(tmp_path):
    settings = common.Settings(
        smoke=True, depths=shattered_gradients.SMOKE_DEPTHS, seeds=2, results_dir=str(tmp_path)
    )
    result = shattered_gradients.run(settings)
    measured = result["measured"]
    assert set(measured) == {(kind, d) for kind in ("plain", "resnet") for d in (8, 20)}
    for nets in measured.values():
        assert len(nets) == 2  # seeds
        for net in nets:
            assert -1.0 <= net["neighbour_correlation"] <= 1.0
            assert -1.0 <= net["lag1_autocorrelation"] <= 1.0
            assert -1.0 <= net["distinct_correlation"] <= 1.0
            assert 0 < net["neighbour_se"] < 0.5 and 0 < net["distinct_se"] < 0.5
            assert len(net["derivative"]) == shattered_gradients.SMOKE_PROBE.points
    fc = shattered_gradients.SMOKE_FC
    assert set(result["fully_connected"]) == {
        (k, d) for k in ("plain", "resnet") for d in fc.depths
    }
    assert all(len(m["lag1"]) == fc.inits for m in result["fully_connected"].values())

    def mean(kind, depth):
        return np.mean([n["neighbour_correlation"] for n in measured[kind, depth]])

    # At 20 layers the plain net's gradients have decorrelated far more than the ResNet's
    # (measured: about 0.3 against 0.8 over 3 seeds; both about 0.85 at depth 8).
    assert mean("plain", 20) < mean("resnet", 20) - 0.2
    assert mean("plain", 20) < mean("plain", 8) - 0.2
    table = open(result["table"]).read()
    assert "Command: `python -m experiments.shattered_gradients --smoke --seeds=2`" in table
    for row in ("| 8 | 7 / 3 |", "| 20 | 19 / 9 |"):
        assert row in table
    assert "Verdict: plain nets decorrelate much faster than ResNets" in table
    _check_png(result["plot"])
    assert os.path.basename(result["plot"]) == "smoke-2seed.png"
    with open(result["json"]) as f:
        numbers = json.load(f)
    assert numbers["nets"]["plain20"]["neighbour_correlation"] == [
        n["neighbour_correlation"] for n in measured["plain", 20]
    ]
    assert numbers["probe"]["points"] == shattered_gradients.SMOKE_PROBE.points
    # The floor is each depth's bootstrap standard error of the mean over the seeds.
    ses = numbers["nets"]["plain20"]["neighbour_se"]
    assert numbers["noise_floor"]["neighbour"]["plain"][1] == pytest.approx(
        np.sqrt(np.sum(np.square(ses))) / len(ses)
    )
    assert "| ReLU layers (plain) / blocks (ResNet) |" in table
    assert "plain: distinct-input correlation" in table


def test_shattered_gradients_measures():
    rng = np.random.default_rng(0)
    row = rng.standard_normal(30)
    assert shattered_gradients.neighbour_correlation(np.stack([row] * 4)) == pytest.approx(1.0)
    alternating = np.stack([row, -row, row, -row])
    assert shattered_gradients.neighbour_correlation(alternating) == pytest.approx(-1.0)
    noise = rng.standard_normal((200, 400))
    assert abs(shattered_gradients.neighbour_correlation(noise)) < 0.01
    assert shattered_gradients.lag1_autocorrelation(np.arange(100.0)) > 0.95
    assert shattered_gradients.lag1_autocorrelation([1.0, -1.0] * 50) < -0.95
    assert shattered_gradients.lag1_autocorrelation([2.0] * 5) == 0.0


def test_shattered_gradients_calibrated_bn_computes_in_inference_what_training_did():
    images = np.random.default_rng(0).standard_normal((32, 8, 8, 1)).astype("float32")
    model = models.build_model("cifar_resnet8", input_shape=(8, 8, 1))
    training = np.asarray(model(images, training=True))  # momentum 0.9: stats barely move
    assert not np.allclose(np.asarray(model(images, training=False)), training, atol=1e-3)
    shattered_gradients.calibrate_batch_norm(model, images)
    np.testing.assert_allclose(np.asarray(model(images, training=False)), training, atol=1e-4)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {layer.momentum for layer in norms} == {tfresnet_layers.BN_MOMENTUM}


def test_shattered_gradients_flags_default_to_three_inits_and_two_smoke_depths():
    cases = (
        (["--smoke"], 3, shattered_gradients.SMOKE_DEPTHS),
        (["--seeds=1"], 1, shattered_gradients.DEPTHS),
    )
    for argv, seeds, depths in cases:
        try:
            flags.FLAGS(["shattered_gradients", *argv])
            settings = common.settings_from_flags(
                shattered_gradients.DEPTHS,
                shattered_gradients.SMOKE_DEPTHS,
                shattered_gradients.SEEDS,
            )
        finally:
            flags.FLAGS.unparse_flags()
        assert (settings.seeds, settings.depths) == (seeds, depths)


COMMITTED = os.path.join(os.path.dirname(__file__), "..", "experiments", "results")


def _committed(run):
    path = os.path.join(COMMITTED, run)
    with open(os.path.join(path, "results.json")) as f:
        results = json.load(f)
    results["config"]["run_dir"] = path
    return results


def test_kernel_norms_from_the_test_loss_or_a_run_sharing_the_first_epochs():
    """plain-56 (no recorded term): its test loss bounds ||w||^2 (above: cross-entropy >= 0;
    below: cross-entropy at most ln 10). ResNet-56 seed 0 borrows its first 7 epochs, and no
    more, from the whole-schedule run, whose lr is the same until then."""
    plain = kernel_norms.norms(
        _committed("degradation/plain56-fashion_mnist-b0.1-bf16-seed0"), COMMITTED, 10
    )
    assert not plain["exact"].any() and plain["source"] is None
    assert plain["high"][0] == pytest.approx(2 * 21.843534469604492 / 1e-4)
    assert plain["low"][0] == pytest.approx(2 * (21.843534469604492 - np.log(10)) / 1e-4)
    resnet = kernel_norms.norms(
        _committed("degradation/resnet56-fashion_mnist-b0.1-bf16-seed0"), COMMITTED, 10
    )
    assert resnet["source"].endswith(os.path.join("depth", "resnet56-fashion_mnist-b1-bf16-seed0"))
    assert resnet["exact"].tolist() == [True] * 7 + [False] * 7
    assert resnet["high"][0] == pytest.approx(2 * 0.3039 / 1e-4, rel=1e-3)
    assert resnet["low"][8] == 0 and resnet["high"][8] == pytest.approx(2 * 0.452 / 1e-4, rel=1e-3)
    # Weight decay alone over epochs 2-7 at lr 0.1: (1 - 0.1 * 1e-4 / 0.1)^(2 * 6 * 468).
    results = _committed("degradation/plain56-fashion_mnist-b0.1-bf16-seed0")
    assert kernel_norms.decay_alone(results, 1, 7) == pytest.approx((1 - 1e-4) ** 5616)


def test_block_bootstrap_counts_dependent_neighbours_once():
    """A series constant over runs of 16 values holds 16 independent values, not 256: the
    block bootstrap's standard error says so; single-value blocks (an iid bootstrap) do not."""
    rng = np.random.default_rng(0)
    runs = [np.repeat(rng.standard_normal(16), 16) for _ in range(4)]  # 4 independent lines
    true_se = 1 / np.sqrt(4 * 16)
    blocks = shattered_gradients.block_bootstrap_se(runs, 16, 2000, rng)
    assert 0.7 * true_se < blocks < 1.3 * true_se
    assert shattered_gradients.block_bootstrap_se(runs, 1, 2000, rng) < 0.4 * true_se
    noise = [rng.standard_normal(255) for _ in range(4)]
    iid = 1 / np.sqrt(4 * 255)
    assert 0.7 * iid < shattered_gradients.block_bootstrap_se(noise, 16, 2000, rng) < 1.3 * iid


@pytest.mark.parametrize("kind", ["plain", "resnet"])
def test_fully_connected_1d_gradient_is_the_derivative_of_its_output(kind):
    fc = shattered_gradients.FullyConnected1D(width=32, points=20_001, inits=1)
    f, gradient = shattered_gradients.fc_gradients(kind, 3, fc, np.random.default_rng(1))
    numeric = np.gradient(f, fc.span / (fc.points - 1))
    # Equal except at the few points next to a ReLU's kink.
    assert np.mean(np.isclose(numeric, gradient, rtol=1e-4, atol=1e-6)) > 0.95
