"""The grid file: what a user writes, what errors they see, and the cells it expands to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import load_error

from gridrun.spec import (
    GridError,
    RenamedKeyWarning,
    effective_lr,
    load_grid,
    parse_grid,
    steps_per_cell,
)  # fmt: skip

FACTORS = {"image_size": [32], "dataset_size": [8], "epochs": [1], "batch_size": [4]}


def _grid(**overrides):
    raw = {"factors": dict(FACTORS)}
    for key, value in overrides.items():
        if key == "factors_extra":
            raw["factors"].update(value)
        elif key in FACTORS:
            raw["factors"][key] = value
        else:
            raw[key] = value
    return raw


def _error(raw) -> str:
    with pytest.raises(GridError) as info:
        parse_grid(raw)
    return str(info.value)


def test_defaults_are_filled_in() -> None:
    grid = parse_grid({"factors": {**FACTORS, "image_size": [32, 96]}})
    assert grid.name == "grid"
    assert grid.data.source == "synthetic" and grid.data.val_fraction == 0.2
    assert grid.data.num_classes == 1 and grid.data.split_seed == 0
    assert (grid.model.name, grid.model.base_channels, grid.model.depth) == ("unet", 16, 4)
    assert (grid.train.optimizer, grid.train.lr, grid.train.loss) == ("adam", 1e-3, "bce_dice")
    assert grid.train.lr_scaling == "none"
    assert grid.seeds == [0]
    assert grid.resources.workers_per_unit == 1
    # every cell is scored at the largest image_size unless data.eval_size says otherwise
    assert grid.eval_size == 96
    assert parse_grid(_grid(data={"eval_size": 48})).eval_size == 48


@pytest.mark.parametrize(
    ("raw", "key", "suggestion"),
    [
        (_grid(seed=[1]), "seed", "seeds"),
        ({"factor": FACTORS}, "factor", "factors"),
        (_grid(train={"lrr": 0.1}), "train.lrr", "lr"),
        (_grid(data={"val_fractoin": 0.1}), "data.val_fractoin", "val_fraction"),
        # the right key is then missing too; the message must name the misspelling
        (
            {
                "factors": {
                    "image_sise": [32],
                    **{k: v for k, v in FACTORS.items() if k != "image_size"},
                }
            },
            "factors.image_sise",
            "image_size",
        ),
    ],
)
def test_unknown_key_names_the_dotted_key_and_suggests_the_right_one(
    raw, key: str, suggestion: str
) -> None:
    message = _error(raw)
    assert f"{key}: unknown key" in message
    assert f"did you mean '{suggestion}'" in message


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        (_grid(epochs=[]), "factors.epochs", "at least one level"),
        (_grid(batch_size=[2, 4, 2]), "factors.batch_size", "duplicated level(s) [2]"),
        (_grid(image_size=[32, 0]), "factors.image_size", "positive"),
        (_grid(dataset_size=[-8]), "factors.dataset_size", "positive"),
        (_grid(train={"lr": 0}), "train.lr", "greater than 0"),
        (_grid(train={"lr": -0.1}), "train.lr", "greater than 0"),
        (_grid(dataset_size=[16, 4], batch_size=[8]), "factors.batch_size", "dataset_size 4"),
        (
            _grid(resources={"workers_per_unit": 3}, batch_size=[2, 4]),
            "resources.workers_per_unit",
            "batch of 2",
        ),
        (_grid(model={"name": "unet2"}), "model.name", "did you mean 'unet'"),
        (_grid(seeds=[]), "seeds", "at least one seed"),
        (_grid(seeds=[0, 0]), "seeds", "duplicated"),
        (_grid(train={"loss": "ce"}), "train.loss", "num_classes"),
        (_grid(data={"num_classes": 3}), "train.loss", "binary"),
        (_grid(data={"source": "folder"}), "data", "path"),
        (_grid(data={"test_fraction": 0.1, "test_size": 4}), "test_size", "not both"),
        (_grid(data={"test_fraction": 0.6}), "data.test_fraction", "less than or equal to 0.5"),
        (_grid(data={"test_fraction": 0}), "data.test_fraction", "greater than 0"),
        (_grid(data={"val_fraction": 0.5, "test_fraction": 0.5}), "test_fraction", "no images"),
        ({"name": "x"}, "factors", "missing"),
    ],
)
def test_invalid_values_name_the_key(raw, key: str, words: str) -> None:
    message = _error(raw)
    assert f"{key}:" in message
    assert words in message


def test_a_non_mapping_is_rejected() -> None:
    assert "mapping" in _error(["factors"])


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("name: x\nfactors:\n  image_size: [32, 64\n  epochs: [1]\n")
    with pytest.raises(GridError, match="line 4 invalid YAML") as info:
        load_grid(path)
    assert str(path) in str(info.value)


def test_missing_grid_file_is_a_grid_error(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="cannot read"):
        load_grid(tmp_path / "absent.yaml")


def test_load_grid_reports_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "factors:\n  image_sise: [32]\n  dataset_size: [8]\n  epochs: [1]\n  batch_size: [4]\n"
    )
    with pytest.raises(GridError) as info:
        load_grid(path)
    assert str(info.value).startswith(f"{path}: factors.image_sise: unknown key")


def test_a_full_factorial_with_two_seeds() -> None:
    grid = parse_grid(
        {
            "factors": {
                "image_size": [32, 64],
                "dataset_size": [8, 16],
                "epochs": [1, 2],
                "batch_size": [2, 4],
            },
            "seeds": [0, 1],
        }
    )
    cells, trials = grid.cells(), grid.trials()
    assert len(cells) == 16 and len(trials) == 32
    assert len({c.cell_id for c in cells}) == 16
    assert len({t.trial_id for t in trials}) == 32
    assert {t.seed for t in trials} == {0, 1}
    # every combination appears once
    assert {(c.image_size, c.dataset_size, c.epochs, c.batch_size) for c in cells} == {
        (i, n, e, b) for i in (32, 64) for n in (8, 16) for e in (1, 2) for b in (2, 4)
    }


def test_cell_ids_do_not_depend_on_key_or_level_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(
        "factors:\n  image_size: [32, 64]\n  dataset_size: [8, 16]\n"
        "  epochs: [1, 3]\n  batch_size: [2, 4]\nseeds: [0, 1]\n"
    )
    second.write_text(
        "seeds: [1, 0]\nfactors:\n  batch_size: [4, 2]\n  epochs: [3, 1]\n"
        "  dataset_size: [16, 8]\n  image_size: [64, 32]\n"
    )
    a, b = load_grid(first), load_grid(second)
    assert [c.cell_id for c in a.cells()] == [c.cell_id for c in b.cells()]
    assert [t.trial_id for t in a.trials()] == [t.trial_id for t in b.trials()]
    # the same grid, so a run directory made from one resumes from the other
    assert a.resolved_yaml() == b.resolved_yaml()


def test_cell_id_reads_the_factor_values() -> None:
    grid = parse_grid(_grid(image_size=[48], dataset_size=[10], epochs=[3], batch_size=[4]))
    (cell,) = grid.cells()
    for value in ("48", "10", "3", "4"):
        assert value in cell.cell_id
    (trial,) = grid.trials()
    assert trial.trial_id != cell.cell_id and trial.trial_id.startswith(cell.cell_id)


@pytest.mark.parametrize(
    ("epochs", "dataset_size", "batch_size", "steps"),
    [(3, 10, 4, 9), (3, 8, 4, 6), (1, 5, 5, 1), (2, 7, 1, 14)],
)
def test_steps_keep_the_partial_last_batch(
    epochs: int, dataset_size: int, batch_size: int, steps: int
) -> None:
    assert steps_per_cell(epochs, dataset_size, batch_size) == steps
    grid = parse_grid(_grid(epochs=[epochs], dataset_size=[dataset_size], batch_size=[batch_size]))
    assert grid.cells()[0].steps == steps


def test_effective_lr_linear_scaling_and_none() -> None:
    linear = parse_grid(
        _grid(batch_size=[2, 4, 8], dataset_size=[8], train={"lr": 0.01, "lr_scaling": "linear"})
    )
    assert effective_lr(linear, 2) == pytest.approx(0.01)
    assert effective_lr(linear, 4) == pytest.approx(0.02)
    assert effective_lr(linear, 8) == pytest.approx(0.04)
    based = parse_grid(
        _grid(
            batch_size=[2, 8],
            dataset_size=[8],
            train={"lr": 0.01, "lr_scaling": "linear", "lr_base_batch": 4},
        )
    )
    assert effective_lr(based, 8) == pytest.approx(0.02)
    none = parse_grid(_grid(batch_size=[2, 8], dataset_size=[8], train={"lr": 0.01}))
    assert effective_lr(none, 2) == effective_lr(none, 8) == pytest.approx(0.01)


def test_relative_data_path_is_resolved_against_the_grid_file(tmp_path: Path) -> None:
    folder = tmp_path / "grids"
    folder.mkdir()
    path = folder / "grid.yaml"
    path.write_text(
        "data:\n  source: folder\n  path: ../datasets/x\n"
        "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
    )
    assert load_grid(path).data.path == (tmp_path / "datasets" / "x").resolve()


def test_absolute_data_path_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    target = tmp_path / "elsewhere" / "data"
    path.write_text(
        f"data: {{source: folder, path: '{target}'}}\n"
        "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
    )
    assert load_grid(path).data.path == target


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    grid = parse_grid(_grid(seeds=[3, 1], train={"lr": 0.05}))
    path = tmp_path / "grid.yaml"
    path.write_text(grid.resolved_yaml())
    again = load_grid(path)
    assert again == grid
    assert [t.trial_id for t in again.trials()] == [t.trial_id for t in grid.trials()]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # a boolean was read as 1 or 0: [32, true] ran as the levels [1, 32]
        (
            _grid(image_size=[32, True]),
            "factors.image_size[1]: expected an integer, not the boolean true",
        ),
        # a whole float is refused too: 2.0 in a grid file is a typo or a float that leaked in
        (_grid(epochs=[2.0]), "factors.epochs[0]: expected an integer, not the float 2.0"),
        (_grid(batch_size=["4"]), "factors.batch_size[0]: expected an integer, not the text '4'"),
        (_grid(seeds=[0, False]), "seeds[1]: expected an integer, not the boolean false"),
        (_grid(model={"depth": True}), "model.depth: expected an integer, not the boolean true"),
        (_grid(data={"val_size": 4.0}), "data.val_size: expected an integer, not the float 4.0"),
        (
            _grid(resources={"workers_per_unit": True}),
            "resources.workers_per_unit: expected an integer, not the boolean true",
        ),
        (
            _grid(tracking={"overlay_images": False}),
            "tracking.overlay_images: expected an integer, not the boolean false",
        ),
        # a float setting takes an integer, but never a boolean (lax pydantic read true as 1.0)
        (_grid(train={"lr": True}), "train.lr: expected a number, not the boolean true"),
        (
            _grid(resources={"custom": {"fake_gpu": True}}),
            "resources.custom.fake_gpu: expected a number, not the boolean true",
        ),
        # auto or false only: true is what auto does on GPUs, and 0 is no boolean
        (
            _grid(resources={"share_gpus": True}),
            "resources.share_gpus: expected auto or false, not the boolean true",
        ),
        (
            _grid(resources={"share_gpus": "off"}),
            "resources.share_gpus: expected auto or false, not the text 'off'",
        ),
    ],
)
def test_a_boolean_float_or_text_for_an_integer_is_refused_not_coerced(raw, message: str) -> None:
    assert _error(raw) == f"grid: {message}"


def test_a_claim_level_is_a_strict_integer_too() -> None:
    claim = {"factor": "image_size", "kind": "better", "levels": [32, True]}
    message = _error(_grid(image_size=[32, 64], claims=[claim]))
    # note: pydantic names the branch of `levels` (a list or a comparison) in the location
    assert message.startswith("grid: claims[0].levels")
    assert message.endswith("[1]: expected an integer, not the boolean true")


def test_whole_numbers_where_a_float_goes_are_read(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    # note: PyYAML reads 1e-3 as text (its floats need a dot); pydantic reads the number
    path.write_text(
        "train: {lr: 1e-3, weight_decay: 0}\nresources: {cpus_per_worker: 2}\n"
        "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
    )
    grid = load_grid(path)
    assert (grid.train.lr, grid.train.weight_decay, grid.resources.cpus_per_worker) == (
        0.001,
        0.0,
        2.0,
    )


_F = "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "seeds: [0]\n" + _F + "seeds: [1]\n",
            "line 3 invalid YAML (duplicate key seeds, first on line 1)",
        ),
        (
            "factors:\n  image_size: [32]\n  dataset_size: [8]\n  epochs: [1]\n"
            "  batch_size: [4]\n  epochs: [2]\n",
            "line 6 invalid YAML (duplicate key factors.epochs, first on line 4)",
        ),
        (
            "train: {lr: 0.1, lr: 0.2}\n" + _F,
            "line 1 invalid YAML (duplicate key train.lr, first on line 1)",
        ),
        (
            _F + "claims:\n  - {factor: epochs, kind: better, levels: [1]}\n"
            "  - {factor: epochs, kind: trend,\n     direction: increases, kind: better}\n",
            "line 5 invalid YAML (duplicate key claims[1].kind, first on line 4)",
        ),
        # `yes` and `true` are both YAML 1.1's True: one key, written twice
        (_F + "yes: 1\ntrue: 2\n", "line 3 invalid YAML (duplicate key true, first on line 2)"),
    ],
)
def test_a_key_given_twice_in_one_mapping_is_refused_naming_both_lines(
    tmp_path: Path, text: str, message: str
) -> None:
    assert load_error(tmp_path / "grid.yaml", text) == message


def test_a_key_overriding_a_merged_one_is_no_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "tracking: {<<: {overlay_every: 2}, overlay_every: 3}\n"
        "claims:\n  - &c {factor: epochs, kind: better, levels: [1], name: a}\n"
        "  - {<<: *c, name: b}\n" + _F
    )
    grid = load_grid(path)
    assert grid.tracking.overlay_every == 3
    assert [c.name for c in grid.claims] == ["a", "b"]


def test_a_model_by_name_reads_and_dumps_as_before() -> None:
    grid = parse_grid(_grid(model={"name": "lraspp_mobilenet_v3_large"}))
    # the resolved grid.yaml of a study by name is unchanged: no keys of the other forms
    assert grid.model_dump(mode="json")["model"] == {
        "name": "lraspp_mobilenet_v3_large", "base_channels": 16, "depth": 4,
    }  # fmt: skip
    assert grid.model.build_args() == ("lraspp_mobilenet_v3_large", {})
    assert parse_grid(_grid()).model.build_args() == ("unet", {"base_channels": 16, "depth": 4})


def test_an_smp_model_gets_smp_defaults_and_keeps_null_weights(tmp_path: Path) -> None:
    default = parse_grid(_grid(model={"library": "smp", "arch": "FPN"})).model
    assert (default.encoder, default.encoder_weights) == ("resnet34", "imagenet")
    grid = parse_grid(
        _grid(model={"library": "smp", "arch": "Unet", "encoder": "resnet18",
                     "encoder_weights": None, "kwargs": {"decoder_attention_type": "scse"}})
    )  # fmt: skip
    assert grid.model.label == "smp Unet resnet18"
    assert grid.model.build_args() == (
        "smp",
        {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None,
         "kwargs": {"decoder_attention_type": "scse"}},
    )  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(grid.resolved_yaml())
    # null stays null (untrained) when the resolved grid is read again, not smp's imagenet
    assert load_grid(path) == grid and load_grid(path).model.encoder_weights is None


def test_model_paths_are_taken_relative_to_the_grid_file(tmp_path: Path) -> None:
    folder = tmp_path / "grids"
    folder.mkdir()
    path = folder / "grid.yaml"
    path.write_text(
        "model: {target: 'my_models:build', kwargs: {width: 8}, weights: ../w/state.pt}\n"
        "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
    )
    model = load_grid(path).model
    assert model.path == folder.resolve()
    assert model.weights == (tmp_path / "w" / "state.pt").resolve()
    assert model.build_args() == (
        "target",
        {"target": "my_models:build", "path": str(folder.resolve()), "kwargs": {"width": 8},
         "weights": str((tmp_path / "w" / "state.pt").resolve())},
    )  # fmt: skip
    assert model.label == "my_models:build"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"library": "smp", "arch": "Unet", "base_channels": 8},
         "model: base_channels: not for library 'smp'"),
        ({"target": "m:build", "encoder": "resnet18"},
         "model: encoder: not for a target (the user's builder)"),
        ({"name": "unet", "kwargs": {"width": 2}}, "model: kwargs: not for a model by name"),
        ({"library": "smp", "arch": "Unet", "target": "m:build"},
         "model: target: give library or target, not both"),
        ({"library": "smp", "encoder": "resnet18"}, "model: arch: required with library 'smp'"),
        ({"target": "my models"},
         "model.target: expected 'module:function', e.g. 'my_models:build', not 'my models'"),
        ({"libary": "smp"}, "model.libary: unknown key (did you mean 'library'?)"),
        ({"name": "unet3"}, "model.name: unknown model 'unet3' (did you mean 'unet'?)"),
    ],
)  # fmt: skip
def test_a_model_mixing_forms_is_refused_naming_the_key(model, message: str) -> None:
    assert _error(_grid(model=model)) == f"grid: {message}"


def test_the_grid_parser_never_imports_torch_or_ray() -> None:
    # note: the torchvision registry (gridrun.sources) is torch-free so that `gridrun check`
    # and the resolved grid file validate data sets without importing torch
    code = (
        "import sys, gridrun.spec; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'torchvision')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- any setting as a factor ------------------------------------------------------------

_SMP = {"library": "smp", "arch": "Unet", "encoder": "resnet18", "encoder_weights": None}


def test_a_setting_by_its_dotted_path_is_crossed_with_the_four() -> None:
    grid = parse_grid(
        _grid(
            batch_size=[2, 4],
            model=_SMP,
            factors_extra={"train.lr": ["1e-3", 3.0e-4], "model.encoder": ["resnet34", "resnet18"]},
        )
    )
    # note: PyYAML reads 1e-3 as text; the level is the number, and levels are sorted
    assert grid.factors.settings == {
        "model.encoder": ["resnet18", "resnet34"],
        "train.lr": [3.0e-4, 1e-3],
    }
    ids = [c.cell_id for c in grid.cells()]
    assert len(ids) == 8 == len(set(ids))
    assert ids[0] == "img32_n8_ep1_bs2_model.encoder=resnet18_train.lr=0.0003"
    cell = grid.cells()[-1]
    assert cell.factors() == {
        "image_size": 32, "dataset_size": 8, "epochs": 1, "batch_size": 4,
        "model.encoder": "resnet34", "train.lr": 1e-3,
    }  # fmt: skip
    applied = grid.for_cell(cell)
    assert (applied.train.lr, applied.model.encoder) == (1e-3, "resnet34")
    assert applied.model.build_args()[1]["encoder"] == "resnet34"
    assert grid.train.lr == 1e-3 and grid.model.encoder == "resnet18"  # the grid is unchanged


def test_a_grid_without_settings_keeps_its_ids_and_file() -> None:
    grid = parse_grid(_grid(batch_size=[2, 4]))
    assert [c.cell_id for c in grid.cells()] == ["img32_n8_ep1_bs2", "img32_n8_ep1_bs4"]
    assert grid.for_cell(grid.cells()[0]) is grid
    assert "nuisance" not in grid.resolved_yaml() and "settings" not in grid.resolved_yaml()


def test_grouped_levels_are_set_together_not_crossed() -> None:
    factors = {k: v for k, v in FACTORS.items() if k != "batch_size"}
    grouped = [{"batch_size": 16, "train.lr": 1.0e-3}, {"batch_size": 4, "train.lr": "3e-4"}]
    grid = parse_grid({"factors": {**factors, "epochs": [1, 2], "dataset_size": [16],
                                   "grouped": grouped},
                       "data": {"num_images": 40}, "train": {"lr_scaling": "linear"}})  # fmt: skip
    pairs = sorted({(c.batch_size, grid.for_cell(c).train.lr) for c in grid.cells()})
    assert pairs == [(4, 3.0e-4), (16, 1e-3)]
    assert len(grid.cells()) == 4
    # the core factor's levels are the groups' (data checks and lr scaling read them)
    assert grid.factors.batch_size == [4, 16]
    assert grid.factors.setting_levels() == {"train.lr": [3.0e-4, 1e-3]}
    # lr_scaling still ties lr to the batch: lr × batch / smallest batch
    cell = next(c for c in grid.cells() if c.batch_size == 16)
    assert effective_lr(grid.for_cell(cell), 16) == pytest.approx(1e-3 * 16 / 4)
    # the resolved file writes the groups back (batch_size only there) and reads the same
    dumped = yaml.safe_load(grid.resolved_yaml())["factors"]
    assert "batch_size" not in dumped
    assert dumped["grouped"][0] == {"batch_size": 4, "train.lr": 3e-4}
    assert parse_grid(yaml.safe_load(grid.resolved_yaml())) == grid


def test_the_resolved_file_writes_settings_back_as_dotted_keys(tmp_path: Path) -> None:
    grid = parse_grid(_grid(factors_extra={"train.lr": [1e-3, 3e-4]}, nuisance=["train.lr"]))
    dumped = yaml.safe_load(grid.resolved_yaml())
    assert dumped["factors"]["train.lr"] == [3e-4, 1e-3]
    assert dumped["nuisance"] == ["train.lr"]
    path = tmp_path / "grid.yaml"
    path.write_text(grid.resolved_yaml())
    assert [c.cell_id for c in load_grid(path).cells()] == [c.cell_id for c in grid.cells()]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"data.source": ["folder"]},
         "factors.data.source: cannot vary per cell (the data is prepared once for the whole"),
        ({"resources.pack": [True]}, "factors.resources.pack: cannot vary per cell"),
        ({"tracking.mlflow": ["x"]}, "factors.tracking.mlflow: cannot vary per cell"),
        ({"seeds": [1]}, "factors.seeds: cannot vary per cell"),
        ({"name": ["a"]}, "factors.name: cannot vary per cell"),
        ({"train.lrr": [1e-3]}, "factors.train.lrr: unknown key (did you mean 'train.lr'?)"),
        ({"lr": [1e-3]}, "factors.lr: unknown key (did you mean 'train.lr'?)"),
        ({"train.lr": [-1e-3, 1e-3]}, "factors.train.lr: level -0.001 is refused (lr: "),
        ({"train.lr": ["fast"]}, "factors.train.lr: level 'fast' is refused (lr: "),
        ({"train.optimizer": ["adam", "lion"]}, "factors.train.optimizer: level 'lion' is refused"),
        ({"augment": ["none", "bogus"]}, "factors.augment: level 'bogus' is refused"),
        ({"train.lr": [1e-3, 1e-3]}, "factors.train.lr: duplicated level(s) [0.001]"),
        ({"train.lr": [1e-3, "x"]}, "factors.train.lr: mixes number and text levels"),
        ({"train.lr": 1e-3}, "factors.train.lr: expected a list of levels"),
        ({"train.lr": []}, "factors.train.lr: needs at least one level"),
        ({"train.lr": [None]}, "factors.train.lr: level null; a level is a finite number"),
        ({"train.loss": ["bce", "ce"]},
         "train.loss: 'ce' needs data.num_classes > 1 (in cell img32_n8_ep1_bs4_train.loss=ce)"),
        ({"grouped": [{"batch_size": 4, "train.lr": 3e-4}]},
         "factors.grouped[0].batch_size: batch_size is crossed too"),
        ({"train.lr": [1e-3], "grouped": [{"train.lr": 3e-4}]},
         "factors.grouped[0].train.lr: train.lr is crossed too"),
        ({"grouped": [{"train.lr": 3e-4}, {"train.momentum": 0.5}]},
         "factors.grouped[1]: names ['train.momentum'], not ['train.lr'] as the first group does"),
        ({"grouped": [{"train.lr": 3e-4}, {"train.lr": "3e-4"}]},
         "factors.grouped: the group {'train.lr': 0.0003} is given twice"),
        ({"grouped": []}, "factors.grouped: expected a list of mappings"),
    ],
)  # fmt: skip
def test_a_setting_factor_that_cannot_be_is_refused_in_one_line(extra, message: str) -> None:
    error = _error(_grid(factors_extra=extra))
    assert error.startswith(f"grid: {message}"), error
    assert error.splitlines() == [error]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"nuisance": ["train.lrr"]},
         "nuisance: 'train.lrr' is not a factor (did you mean 'train.lr'?)"),
        ({"nuisance": ["epochs"]}, "nuisance: epochs is read off each training run"),
        ({"nuisance": ["train.lr", "train.lr"]}, "nuisance: duplicated factor(s)"),
        ({"claims": [{"factor": "train.momentum", "kind": "better", "levels": [0.5]}]},
         "claims[0].factor: 'train.momentum' is not a factor of this grid"),
        ({"claims": [{"factor": "batch_size", "kind": "better", "levels": ["4"]}]},
         "claims[0].levels: levels of batch_size are positive integers"),
    ],
)  # fmt: skip
def test_nuisance_and_claims_name_declared_factors(extra, message: str) -> None:
    error = _error(_grid(factors_extra={"train.lr": [1e-3, 3e-4]}, **extra))
    assert error.startswith(f"grid: {message}"), error


def test_nuisance_and_claims_on_a_setting_factor_are_read() -> None:
    claim = {"factor": "train.lr", "kind": "better", "levels": [3e-4]}
    grid = parse_grid(_grid(factors_extra={"train.lr": [1e-3, 3e-4]}, nuisance=["train.lr"],
                            claims=[claim]))  # fmt: skip
    assert grid.nuisance == ["train.lr"]
    assert grid.claims[0].levels == [3e-4]
    assert grid.claims[0].describe() == "train.lr 0.0003 is better"


def test_a_key_under_its_old_name_is_read_under_the_new_with_one_warning() -> None:
    raw = _grid(resources={"workers_per_trial": 2, "max_concurrent_trials": 3})
    raw["factors"]["batch_size"] = [4]
    with pytest.warns(RenamedKeyWarning) as caught:
        grid = parse_grid(raw, "g.yaml")
    assert [str(w.message) for w in caught] == [
        "g.yaml: resources.workers_per_trial is now resources.workers_per_unit; read as that",
        "g.yaml: resources.max_concurrent_trials is now resources.max_concurrent_units; read as"
        " that",
    ]
    assert (grid.resources.workers_per_unit, grid.resources.max_concurrent_units) == (2, 3)
    # the resolved grid speaks the new names only
    assert "workers_per_trial" not in grid.resolved_yaml()
    both = _grid(resources={"workers_per_trial": 1, "workers_per_unit": 1})
    assert _error(both) == (
        "grid: resources.workers_per_trial: give resources.workers_per_unit only (its new name)"
    )
