"""Augmentation: the `augment:` key a user writes, the errors they see, and what the
transforms do to image and mask (jointly, seeded per sample, on the batch's device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gridrun.augment import Augmentation, Augmenter
from gridrun.cli import app
from gridrun.runs import plan_run, training_runs
from gridrun.spec import GridError, load_grid, parse_grid
from gridrun.targets import resolve_target

FACTORS = {"image_size": [16], "dataset_size": [8], "epochs": [1], "batch_size": [4]}
IGNORE = 255


def _parse(augment) -> Augmentation:
    grid = parse_grid({"factors": FACTORS, "augment": augment})
    (run,) = training_runs(grid, grid.trials())
    return plan_run(grid, run, 1, 16).augment


def _error(augment) -> str:
    with pytest.raises(GridError) as info:
        parse_grid({"factors": FACTORS, "augment": augment})
    return str(info.value)


def _names(aug: Augmentation) -> list[str]:
    return [name for name, _ in aug.transforms]


def test_no_augment_key_means_no_augmentation() -> None:
    grid = parse_grid({"factors": FACTORS})
    # null, so a study written before the key existed resumes with the same grid
    assert grid.augment is None
    assert "augment: null" in grid.resolved_yaml().splitlines()
    assert not _parse(None) and not _parse("none") and not _parse([])


def test_presets_name_their_transforms() -> None:
    assert _names(_parse("flips")) == ["hflip", "vflip", "rot90"]
    assert _names(_parse("strong")) == [
        "hflip", "vflip", "rot90", "random_resized_crop", "color_jitter", "gaussian_noise",
    ]  # fmt: skip
    # a preset inside a list stands for its transforms
    assert _names(_parse(["flips", "gaussian_noise"])) == ["hflip", "vflip", "rot90",
                                                           "gaussian_noise"]  # fmt: skip


def test_a_transform_takes_its_arguments_and_defaults_the_rest() -> None:
    aug = _parse(["hflip", {"random_resized_crop": {"scale": [0.25, 1.0]}},
                  {"gaussian_noise": {"sigma": "5e-2"}}])  # fmt: skip
    assert aug.transforms == (
        ("hflip", {"p": 0.5}),
        ("random_resized_crop", {"scale": [0.25, 1.0], "ratio": [0.75, 4 / 3]}),
        # PyYAML reads 5e-2 as text; it is still a number
        ("gaussian_noise", {"mean": 0.0, "sigma": 0.05}),
    )
    # the resolved grid file reads back as the same augmentation
    grid = parse_grid({"factors": FACTORS, "augment": ["hflip", {"color_jitter": None}]})
    again = parse_grid({"factors": FACTORS, "augment": grid.model_dump(mode="json")["augment"]})
    assert again.augment == grid.augment


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        (["hfilp"], "augment[0]: unknown transform 'hfilp' (did you mean 'hflip'?)"),
        ("strnog", "augment: unknown transform 'strnog' (did you mean 'strong'?)"),
        ({"hflip": {"q": 1}}, "augment.hflip.q: unknown argument; it takes p"),
        (
            ["hflip", {"random_resized_crop": {"scal": [0.5, 1.0]}}],
            "augment[1].random_resized_crop.scal: unknown argument (did you mean 'scale'?)",
        ),
        ([{"rot90": {"k": 1}}], "augment[0].rot90.k: unknown argument; it takes no arguments"),
        ([{"hflip": {"p": 1.5}}], "augment[0].hflip.p: Input should be less than or equal to 1"),
        ([{"hflip": {"p": True}}], "augment[0].hflip.p: expected a number, not the boolean true"),
        ([{"flips": {"p": 1}}], "augment[0].flips: a preset takes no arguments"),
        ([{"hflip": {}, "vflip": {}}], "augment[0]: expected a transform's name or a one-key"),
        (3, "augment: expected a preset name, a list of transforms or {target:"),
        ({"target": "my_aug"}, "augment.target: expected 'module:function', e.g. 'my_aug:build'"),
        ({"target": "my_aug:build", "kwarg": {}}, "augment.kwarg: unknown key (did you mean"),
    ],
)
def test_a_wrong_augment_is_one_line_naming_the_key(augment, message: str) -> None:
    error = _error(augment)
    assert error.startswith(f"grid: {message}"), error
    assert "\n" not in error


def test_the_cli_refuses_an_unknown_transform_with_exit_2(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "factors: {image_size: [16], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
        "augment: [hflip, {color_jiter: {brightness: 0.1}}]\n"
    )
    for command in (["plan", str(grid)], ["run", str(grid), "--out", str(tmp_path / "s")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert "augment[1]: unknown transform 'color_jiter' (did you mean 'color_jitter'?)" in (
            " ".join(result.output.split())
        )
        assert line.startswith("error:")
    # refused before anything ran: no study directory
    assert not (tmp_path / "s").exists()


def _blocks(n: int, size: int = 16, block: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of 0/1 blocks (N×1×size×size) and masks marking the 1 blocks as ignored."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 2, (n, 1, size // block, size // block), generator=g)
    image = coarse.repeat_interleave(block, -1).repeat_interleave(block, -2).float()
    return image, (image[:, 0] * IGNORE).long()


@pytest.mark.parametrize("name", ["hflip", "vflip", "rot90", "random_resized_crop"])
def test_mask_and_image_get_the_same_geometric_transform(name: str) -> None:
    args = {"p": 1.0} if name.endswith("flip") else {}
    image, mask = _blocks(32)
    out_image, out_mask = Augmenter(_parse([{name: args}]), 0, 16)(
        image, mask, 1, np.arange(32)
    )
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    # masks are resampled by nearest: an ignored pixel stays 255, never blended
    assert set(out_mask.unique().tolist()) <= {0, IGNORE}
    # wherever the image was not blended (a crop resamples it bilinearly), the mask says
    # the same as the image: both moved by one transform
    kept = (out_image == 0) | (out_image == 1)
    assert kept.float().mean() > 0.5
    torch.testing.assert_close(out_mask[kept[:, 0]], (out_image[kept] * IGNORE).long())
    if name != "random_resized_crop":
        # a flip or quarter turn moves every pixel: each keeps its value
        assert torch.equal(out_mask, (out_image[:, 0] * IGNORE).long())
        assert out_mask.eq(IGNORE).sum() == mask.eq(IGNORE).sum()
    assert not torch.equal(out_image, image)


def test_each_sample_is_seeded_by_seed_epoch_and_index_alone() -> None:
    image, mask = _blocks(6)
    mask[:, :2] = 1  # a class label next to the ignored pixels
    augment = Augmenter(_parse("strong"), 3, 16)
    before = torch.get_rng_state()
    whole = augment(image, mask, 2, np.arange(10, 16))
    # the training stream draws the same numbers as without augmentation
    assert torch.equal(torch.get_rng_state(), before)
    # the same sample in another batch (another batch size, another worker's share)
    alone = augment(image[3:4], mask[3:4], 2, np.array([13]))
    assert torch.equal(whole[0][3:4], alone[0]) and torch.equal(whole[1][3:4], alone[1])
    assert set(whole[1].unique().tolist()) <= {0, 1, IGNORE}
    # and nothing else: another epoch, index or seed draws anew
    for other in (
        augment(image, mask, 3, np.arange(10, 16)),
        augment(image, mask, 2, np.arange(11, 17)),
        Augmenter(_parse("strong"), 4, 16)(image, mask, 2, np.arange(10, 16)),
    ):
        assert not torch.equal(other[0], whole[0])


def _write_builder(folder: Path, flip: str) -> None:
    folder.mkdir(parents=True)
    # the user's builder: a torchvision v2 pipeline, seen by every training sample
    (folder / "my_aug.py").write_text(
        "from torchvision.transforms import v2\n"
        "seen = []\n"
        "def build(p):\n"
        "    flip = v2.Random" + flip + "Flip(p=p)\n"
        "    def transform(image, mask):\n"
        "        seen.append(tuple(image.shape))\n"
        "        return flip(image, mask)\n"
        "    return transform\n"
    )
    (folder / "grid.yaml").write_text(
        "factors: {image_size: [16], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
        "augment: {target: 'my_aug:build', kwargs: {p: 1.0}}\n"
    )


def test_a_builder_by_import_path_is_found_beside_the_grid_file(tmp_path: Path) -> None:
    image, mask = _blocks(2)
    flipped = {}
    for flip in ("Horizontal", "Vertical"):
        # two grids, each with its own my_aug.py: neither shadows the other
        _write_builder(tmp_path / flip, flip)
        grid = load_grid(tmp_path / flip / "grid.yaml")
        assert grid.augment["folder"] == str((tmp_path / flip).resolve())
        (run,) = training_runs(grid, grid.trials())
        aug = plan_run(grid, run, 1, 16).augment
        assert aug == Augmentation(target="my_aug:build", kwargs={"p": 1.0},
                                   folder=str((tmp_path / flip).resolve()))  # fmt: skip
        flipped[flip] = Augmenter(aug, 0, 16)(image, mask, 1, np.arange(2))
    assert torch.equal(flipped["Horizontal"][0], image.flip(-1))
    assert torch.equal(flipped["Horizontal"][1], mask.flip(-1))
    assert torch.equal(flipped["Vertical"][0], image.flip(-2))
    assert torch.equal(flipped["Vertical"][1], mask.flip(-2))
    build = resolve_target("my_aug:build", str((tmp_path / "Vertical").resolve()), "augment.target")
    assert build.__globals__["seen"] == [(1, 16, 16)] * 2


def test_a_builder_that_is_nowhere_is_refused_when_the_grid_is_read(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "factors: {image_size: [16], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
        "augment: {target: 'no_such_aug:build'}\n"
    )
    with pytest.raises(GridError) as info:
        load_grid(grid)
    assert str(info.value) == (
        f"{grid}: augment.target: no module 'no_such_aug' in {tmp_path.resolve()} or on "
        "the Python path"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def build():\n    raise RuntimeError('no such file: aug.cfg')\n",
         "augment: RuntimeError: no such file: aug.cfg"),
        ("def build():\n    return lambda image, mask: (image[..., :4, :4], mask[..., :4, :4])\n",
         "augment: the transform turned an image (3, 16, 16) and mask (16, 16) into (3, 4, 4)"),
    ],
)  # fmt: skip
def test_a_builder_that_fails_on_a_sample_is_refused_before_ray(
    tmp_path: Path, body: str, message: str
) -> None:
    (tmp_path / "bad_aug.py").write_text(body)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "data: {source: synthetic}\n"
        "factors: {image_size: [16], dataset_size: [8], epochs: [1], batch_size: [4]}\n"
        "augment: {target: 'bad_aug:build'}\n"
    )
    for command in (["plan", str(grid)], ["run", str(grid), "--out", str(tmp_path / "s")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
