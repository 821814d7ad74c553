"""The config tree: each setting written once (tfresnet/config.py), its flags generated from it
(tfresnet/cli/config_flags.py), `--config=config.json` plus overrides, validation where a config
is made."""

import dataclasses
import glob
import json
import os
import re

import pytest
from absl import flags
from repo_files import ROOT

from tfresnet import cli, files, tune_config, tuning
from tfresnet import train as train_lib
from tfresnet.cli import train as train_cli
from tfresnet.cli import tune as tune_cli
from tfresnet.train import TrainConfig

FILE_FLAG = "config"  # --config=PATH: the one train flag that is no TrainConfig field


def _fields(cls):
    return {field.name: field for field in dataclasses.fields(cls)}


def _flags(module, *argv):
    fv = flags.FlagValues()
    module.define_flags(fv)
    fv([module.__name__, *argv])
    return fv


def _defined(fv):
    return {flag.name for group in fv.flags_by_module_dict().values() for flag in group}


def test_every_train_setting_is_a_flag_and_every_flag_a_setting():
    assert _defined(_flags(train_cli)) - {FILE_FLAG} == set(_fields(TrainConfig))


def test_tune_flags_are_the_shared_train_settings_the_space_and_the_search():
    shared = (
        set(_fields(TrainConfig)) - set(tune_config.SPACE_FIELDS) - set(tune_config.TRIAL_FIELDS)
    )
    own = set(_fields(tuning.TuneConfig)) - {"train", "space"}
    assert _defined(_flags(tune_cli)) == shared | set(_fields(tuning.SearchSpace)) | own
    assert {"model", "run_dir", "resume", "eval_test_each_epoch"}.isdisjoint(shared)


def test_flag_defaults_are_the_dataclass_defaults():
    fv = _flags(train_cli)
    for name, field in _fields(TrainConfig).items():
        assert fv[name].default == field.default, name
    assert train_cli.config_from_flags(fv) == TrainConfig()  # nothing given: the defaults
    fv = _flags(tune_cli)
    for name, value in dataclasses.asdict(tune_config.shared_train_config()).items():
        if name in fv and name not in tune_config.SPACE_FIELDS:
            assert fv[name].default == value, name
    assert fv["validation_size"].default == 0.1  # a search selects on a validation split
    for name, field in _fields(tuning.TuneConfig).items():
        if name in fv:
            assert fv[name].default == field.default, name
    for name in _fields(tuning.SearchSpace):
        assert fv[name].default is None, name  # unset: the tuner's default space
    config = tune_cli.config_from_flags(fv)
    assert config == tuning.TuneConfig(tune_config.shared_train_config())


def test_help_lists_each_flag_once_under_its_group(capsys):
    assert cli.main(["tfresnet", "train", "--help"]) == 0
    out = capsys.readouterr().out
    sections = dict(re.findall(r"^(\S[^\n]*):\n((?:  [^\n]*\n?)+)", out, re.M))
    groups = [g for g in sections if g in ("model", "data", "schedule", "runtime", "output")]
    assert groups == ["model", "data", "schedule", "runtime", "output"]
    for name, field in _fields(TrainConfig).items():
        assert len(re.findall(rf"^  --(\[no\])?{name}:", out, re.M)) == 1, name
        assert re.search(rf"^  --(\[no\])?{name}:", sections[field.metadata["group"]], re.M), name
        first_words = " ".join(field.metadata["help"].split()[:3])
        assert first_words in " ".join(sections[field.metadata["group"]].split()), name


def _saved(tmp_path, **changes):
    config = TrainConfig(
        model="cifar_resnet8", run_dir=str(tmp_path / "run"), epochs=2, batch_size=64, seed=3,
        export=False, verbose=2, **changes,
    )  # fmt: skip
    path = str(tmp_path / "run" / "config.json")
    files.write_json(path, dataclasses.asdict(config))  # as train() saves it
    return config, path


def test_config_file_and_one_override_reproduce_the_saved_config(tmp_path):
    saved, path = _saved(tmp_path)
    got = train_cli.config_from_flags(_flags(train_cli, f"--config={path}", "--epochs=3"))
    assert dataclasses.asdict(got) == {**dataclasses.asdict(saved), "epochs": 3}
    same = train_cli.config_from_flags(_flags(train_cli, f"--config={path}"))
    assert same == saved and train_lib.check_run_dir(same) == saved  # "the same run"
    with pytest.raises(train_lib.TrainingError, match=r"differs in: epochs\)"):
        train_lib.check_run_dir(got)


def test_a_saved_overwrite_or_resume_is_not_taken_over(tmp_path):
    saved, path = _saved(tmp_path, overwrite=True)
    got = train_cli.config_from_flags(_flags(train_cli, f"--config={path}"))
    assert got.overwrite is False and got.identity() == saved.identity()
    assert train_cli.config_from_flags(
        _flags(train_cli, f"--config={path}", "--overwrite")
    ).overwrite


def test_committed_flat_config_files_load_as_the_same_run(tmp_path):
    """The experiments' config.json files (flat, verbose an int) are still "the same run"."""
    committed = sorted(glob.glob(str(ROOT / "experiments/results/*/*/config.json")))
    assert committed
    for source in committed[:3]:
        saved = files.read_json(source)
        run = tmp_path / os.path.basename(saved["run_dir"])  # the run, moved to another checkout
        files.write_json(str(run / "config.json"), {**saved, "run_dir": str(run)})
        config = train_cli.config_from_flags(_flags(train_cli, f"--config={run}/config.json"))
        assert train_lib.check_run_dir(config) == config  # continues, not "a different run"
        # A field added since the run was saved compares at its default, as check_run_dir does.
        defaults = train_lib.TrainConfig().identity()
        assert {k: saved.get(k, defaults[k]) for k in config.identity() if k != "run_dir"} == {
            k: v for k, v in config.identity().items() if k != "run_dir"
        }


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"epoch": 3}', "'epoch' is not a TrainConfig setting; allowed: model, dataset"),
        ('{"epochs": "3"}', "epochs must be null or a JSON int; got '3'"),
        ('{"shortcut": "D"}', "Unknown shortcut 'D'; allowed: A, B, C, none."),
        ("[1, 2]", "must hold a JSON object of settings"),
        ('{"model": ', "is not readable JSON"),
    ],
)
def test_bad_config_files_are_one_line_and_status_2(tmp_path, capsys, body, message):
    path = tmp_path / "config.json"
    path.write_text(body)
    assert cli.main(["tfresnet", "train", f"--config={path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_settings_are_checked_where_the_config_is_made():
    """Before the data loads or a layer is made: choices and bounds of each field."""
    with pytest.raises(ValueError, match=r"^Unknown shortcut 'D'; allowed: A, B, C, none\.$"):
        TrainConfig(shortcut="D")
    with pytest.raises(ValueError, match=r"^Unknown stride_placement 'v2'; allowed: v1, v1.5\.$"):
        TrainConfig(stride_placement="v2")
    with pytest.raises(ValueError, match=r"^Unknown verbose '3'; allowed: auto, 0, 1, 2\.$"):
        TrainConfig(verbose=3)
    assert TrainConfig(verbose=2).verbose == "2"  # the int earlier runs saved
    with pytest.raises(ValueError, match=r"^max_trials must be >= 1; got 0\.$"):
        tuning.TuneConfig(tune_config.shared_train_config(), max_trials=0)


def test_a_run_saved_before_zero_init_residual_followed_the_recipe_is_the_same_run(
    tmp_path, monkeypatch
):
    """Runs saved False; a config now says None (the recipe's value: False for the paper's)."""
    from tfresnet import recipes, train_config

    config = train_config.TrainConfig(run_dir=str(tmp_path / "r"), dataset="digits", epochs=1)
    old = {**config.identity(), "zero_init_residual": False}
    assert train_config.comparable(old) == train_config.comparable(config.identity())
    fast = {**config.identity(), "recipe": "fast"}
    assert train_config.comparable(fast)["zero_init_residual"] is True
    # Every trick left to the recipe compares as the recipe's value, not only zero_init_residual.
    spelled = {**config.identity(), "label_smoothing": 0.0, "nesterov": False, "test_flip": False}
    assert train_config.comparable(spelled) == train_config.comparable(config.identity())
    assert train_config.comparable(fast)["label_smoothing"] == 0.1
    # An explicit value other than the recipe's stays a different run.
    fast_unsmoothed = {**fast, "label_smoothing": 0.0}
    assert train_config.comparable(fast_unsmoothed) != train_config.comparable(fast)
    # The recipe's flip averaging holds only where the data flips: left open, not assumed.
    assert train_config.comparable(fast)["test_flip"] is None
    # Unset, the recipe follows the data (cifar or imagenet): only a value both share is assumed.
    imagenet = dataclasses.replace(recipes.RECIPES["imagenet"], label_smoothing=0.1)
    monkeypatch.setitem(recipes.RECIPES, "imagenet", imagenet)
    assert train_config.comparable(config.identity())["label_smoothing"] is None
    assert train_config.comparable(config.identity())["nesterov"] is False
    # Runs saved the test curve as True; now None is the recipe's (on, except under fast).
    assert train_config.comparable({**config.identity(), "eval_test_each_epoch": True}) == (
        train_config.comparable(config.identity())
    )
    assert train_config.comparable(fast)["eval_test_each_epoch"] is False
    os.makedirs(config.run_dir)
    with open(os.path.join(config.run_dir, "config.json"), "w") as f:
        json.dump({**config.identity(), "zero_init_residual": False}, f)
    assert train_config.check_run_dir(config).zero_init_residual is None  # not refused
