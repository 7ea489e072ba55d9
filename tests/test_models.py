"""Model constructors: shapes a trial relies on, sizes, and no downloads."""

from __future__ import annotations

import pytest
import torch

from gridrun.models import build_model, count_params

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


def test_the_grid_validator_knows_exactly_the_models_built_here():
    from gridrun import models, spec

    assert spec.MODEL_NAMES == models.MODEL_NAMES
