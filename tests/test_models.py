"""Model constructors: shapes a trial relies on, sizes, no downloads, the user's own
builders and weights, and the check `gridrun plan` runs before Ray starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from gridrun.models import ModelError, build_model, check_models, count_params
from gridrun.runs import plan_run, training_runs
from gridrun.spec import load_grid, parse_grid

torch.set_num_threads(1)


def test_default_unet_size() -> None:
    params = count_params(build_model("unet", 3, 1))
    assert 400_000 < params < 600_000


def test_unet_width_and_depth_options_change_the_model() -> None:
    small = count_params(build_model("unet", 3, 1, base_channels=8, depth=3))
    assert small < count_params(build_model("unet", 3, 1, base_channels=8, depth=4))
    assert small < count_params(build_model("unet", 3, 1, base_channels=16, depth=3))


@pytest.mark.parametrize(("height", "width"), [(50, 37), (64, 64), (9, 13)])
def test_unet_keeps_any_image_size(height: int, width: int) -> None:
    model = build_model("unet", 3, 1, base_channels=4)
    assert model(torch.rand(2, 3, height, width)).shape == (2, 1, height, width)


@pytest.mark.parametrize(("depth", "size"), [(7, 32), (4, 4), (5, 8), (4, 1)])
def test_unet_handles_images_smaller_than_its_padding(depth: int, size: int) -> None:
    # a grid may pair model.depth 7 (stride 64) with image_size 32
    model = build_model("unet", 1, 1, base_channels=2, depth=depth)
    assert model(torch.rand(2, 1, size, size)).shape == (2, 1, size, size)


def test_unet_multiclass_and_single_channel_input() -> None:
    model = build_model("unet", 1, 3, base_channels=4, depth=3)
    assert model(torch.rand(2, 1, 24, 20)).shape == (2, 3, 24, 20)


def test_unet_output_depends_only_on_its_own_image() -> None:
    # padding and cropping must not mix images of a batch (eval mode: BatchNorm is per model)
    model = build_model("unet", 1, 1, base_channels=4, depth=3).eval()
    x = torch.rand(3, 1, 19, 21)
    with torch.no_grad():
        together = model(x)
        alone = model(x[1:2])
    torch.testing.assert_close(together[1:2], alone)


def test_lraspp_builds_untrained_without_downloading(monkeypatch) -> None:
    import torchvision.models._api as weights_api

    def no_download(*args, **kwargs):
        raise AssertionError("a pretrained weight download was attempted")

    monkeypatch.setattr(weights_api, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = build_model("lraspp_mobilenet_v3_large", 1, 2)
    assert model(torch.rand(2, 1, 64, 48)).shape == (2, 2, 64, 48)


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unet3"):
        build_model("unet3", 3, 1)


FACTORS = "factors: {image_size: [32], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
SMP_UNET = {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "kwargs": {}}
MY_MODELS = """
import torch
from torch import nn


def build(in_channels, num_classes, width=4, extra=0):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, num_classes + extra, 1),
    )


def not_a_model(in_channels, num_classes):
    return [in_channels, num_classes]
"""


@pytest.fixture
def my_models(tmp_path: Path, monkeypatch) -> Path:
    """A grid folder holding my_models.py; the import is undone after the test."""
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    yield tmp_path
    sys.modules.pop("my_models", None)


def _plans(grid):
    return [plan_run(grid, run, 3, grid.eval_size) for run in training_runs(grid, grid.trials())]


def _check_error(folder: Path, model: str, factors: str = FACTORS) -> str:
    path = folder / "grid.yaml"
    path.write_text(f"model: {model}\n{factors}")
    with pytest.raises(ModelError) as info:
        check_models(_plans(load_grid(path)))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_smp_unet_on_resnet18_gives_logits_per_class() -> None:
    model = build_model("smp", 1, 3, **SMP_UNET)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 3, 64, 64)
    binary = build_model("smp", 3, 1, **{**SMP_UNET, "kwargs": {"decoder_channels": [8] * 5}})
    assert binary(torch.rand(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    assert count_params(binary) < count_params(build_model("smp", 3, 1, **SMP_UNET))


def test_a_builder_next_to_the_grid_file_goes_from_parse_to_build(my_models: Path) -> None:
    path = my_models / "grid.yaml"
    path.write_text(f"model: {{target: 'my_models:build', kwargs: {{width: 6}}}}\n{FACTORS}")
    (plan,) = _plans(load_grid(path))
    assert plan.model_options["path"] == str(my_models.resolve())
    check_models([plan])
    model = build_model(plan.model_name, plan.in_channels, plan.num_classes, **plan.model_options)
    assert model[0].out_channels == 6 and model[0].in_channels == 3
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)


def test_saved_weights_load_and_give_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = build_model("unet", 1, 2, base_channels=4, depth=3).eval()
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    # gridrun's own checkpoints hold the state dict beside the epoch
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    x = torch.rand(2, 1, 24, 24)
    for name in ("weights.pt", "checkpoint.pt"):
        torch.manual_seed(1)
        loaded = build_model(
            "unet", 1, 2, base_channels=4, depth=3, weights=str(tmp_path / name)
        ).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), trained(x), rtol=0, atol=0)


def test_weights_that_do_not_fit_name_the_keys_and_counts(tmp_path: Path) -> None:
    small = build_model("unet", 1, 1, base_channels=4, depth=2)
    torch.save({**small.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path / "w.pt")
    message = _check_error(tmp_path, "{name: unet, base_channels: 4, depth: 3, weights: w.pt}")
    # depth 3 has one more level; the file's first convolution takes 1 channel, not 3
    assert message.startswith(
        f"model.weights: {tmp_path / 'w.pt'} does not fit the model: 26 missing keys "
        "(down.2.0.weight, down.2.1.weight, down.2.1.bias, ...); "
    )
    assert "; 1 unexpected key (extra.weight); " in message
    assert "; 13 keys of another shape (down.0.0.weight (4, 1, 3, 3) in the file, " \
        "(4, 3, 3, 3) in the model, " in message


def test_a_missing_weights_file_is_one_line(tmp_path: Path) -> None:
    message = _check_error(tmp_path, "{name: unet, weights: nowhere/w.pt}")
    assert message == f"model.weights: {tmp_path / 'nowhere' / 'w.pt'}: no such file"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("{target: 'my_modls:build'}", "model.target: no module 'my_modls' in "),
        ("{target: 'my_models:biuld'}", "model.target: my_models has no 'biuld' (did you "
         "mean 'build'?)"),
        ("{target: 'my_models:not_a_model'}", "model.target: my_models:not_a_model returned "
         "a list, not a torch.nn.Module"),
        ("{target: 'my_models:build', kwargs: {extra: 1}}", "model: my_models:build gives "
         "logits of shape (2, 2, 32, 32) for images of shape (2, 3, 32, 32); gridrun needs "
         "(2, 1, 32, 32): one logit channel for binary masks (data.num_classes 1)"),
        ("{target: 'my_models:build', kwargs: {depth: 1}}", "model: my_models:build cannot "
         "be built: TypeError: build() got an unexpected keyword argument 'depth'"),
    ],
)  # fmt: skip
def test_a_wrong_builder_is_one_line(my_models: Path, model: str, expected: str) -> None:
    assert _check_error(my_models, model).startswith(expected)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("{library: smp, arch: Unett, encoder: resnet18}",
         "model.arch: smp has no architecture 'Unett' (did you mean 'Unet'?); one of Unet, "),
        ("{library: smp, arch: Unet, encoder: resnet81}",
         "model.encoder: smp has no encoder 'resnet81' (did you mean 'resnet18'?)"),
        ("{library: smp, arch: Unet, encoder: resnet18, encoder_weights: imagenett}",
         "model.encoder_weights: resnet18 has the weights imagenet, ssl, swsl, not "
         "'imagenett'"),
    ],
)  # fmt: skip
def test_smp_names_are_checked_against_smp(tmp_path: Path, model: str, expected: str) -> None:
    assert _check_error(tmp_path, model).startswith(expected)


def test_an_image_size_the_smp_encoder_refuses_is_one_line(tmp_path: Path) -> None:
    factors = FACTORS.replace("[32]", "[32, 48]", 1)
    message = _check_error(
        tmp_path, "{library: smp, arch: FPN, encoder: resnet18, encoder_weights: null}", factors
    )
    assert message == (
        "factors.image_size: smp FPN resnet18 takes images whose side is a multiple of 32, "
        "not 48"
    )


def test_pretrained_weights_offline_say_what_is_missing(tmp_path: Path, monkeypatch) -> None:
    import segmentation_models_pytorch.encoders as encoders
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(encoders, "hf_hub_download", offline)
    message = _check_error(tmp_path, "{library: smp, arch: Unet, encoder: resnet18}")
    assert message.startswith(
        "model.encoder_weights: the 'imagenet' weights of resnet18 are not on this machine "
        "and cannot be downloaded from huggingface.co/smp-hub/resnet18.imagenet "
        "(LocalEntryNotFoundError: "
    )
    assert message.endswith("or set encoder_weights: null")


def test_every_distinct_model_is_built_once(monkeypatch) -> None:
    from gridrun import models

    built = []
    real = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *a, **k: built.append(a) or real(*a, **k))
    grid = parse_grid(
        {
            "model": {"base_channels": 2, "depth": 2},
            "factors": {"image_size": [16, 24], "dataset_size": [8], "epochs": [1, 2],
                        "batch_size": [2, 4]},
            "seeds": [0, 1],
        }
    )  # fmt: skip
    check_models(_plans(grid))
    assert built == [("unet", 3, 1)]
