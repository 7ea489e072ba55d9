"""Hostile image folders: every case either loads to exactly the stated arrays or is
refused with one DataError naming the file. The table in the README's data section
lists the same cases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridrun.data import DataError, read_folder

# --- refused: files that cannot be read ------------------------------------------------


def _refused(root: Path, culprit: Path, match: str, **options) -> None:
    with pytest.raises(DataError, match=match) as info:
        read_folder(root, **options)
    message = str(info.value)
    assert message.startswith(f"{culprit}: ") and "\n" not in message


def _bytes(rel: str, data: bytes):
    return lambda root: (root / rel).write_bytes(data)


@pytest.mark.parametrize(
    ("spoil", "culprit", "match"),
    [
        pytest.param(_bytes("images/02.png", b"this is not a png at all"), "images/02.png",
                     "unreadable image", id="garbage bytes"),
        pytest.param(_bytes("images/01.png", b""), "images/01.png", "unreadable image",
                     id="zero-byte image"),
        pytest.param(_bytes("masks/00.png", b""), "masks/00.png", "unreadable image",
                     id="zero-byte mask"),
        pytest.param(lambda root: (root / "images/03.png").mkdir(), "images/03.png",
                     "a directory, not an image", id="directory named like an image"),
        pytest.param(lambda root: os.mkfifo(root / "masks/03.png"), "masks/03.png",
                     "not a regular file, not an image", id="named pipe, without blocking"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_image_is_refused(image_folder, spoil, culprit: str, match: str):
    root = image_folder(3)
    spoil(root)
    _refused(root, root / culprit, match)


def test_truncated_png_is_refused(membrane: Path, tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        shutil.copy(membrane / sub / "00.png", tmp_path / sub / "00.png")
        shutil.copy(membrane / sub / "01.png", tmp_path / sub / "01.png")
    data = (membrane / "images" / "01.png").read_bytes()
    (tmp_path / "images" / "01.png").write_bytes(data[: len(data) // 2])
    _refused(tmp_path, tmp_path / "images" / "01.png", "unreadable image")


def test_truncated_jpeg_is_refused(image_folder) -> None:
    root = image_folder(2)
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / "01.jpg", quality=95)
    (root / "images" / "01.png").unlink()
    data = (root / "images" / "01.jpg").read_bytes()
    (root / "images" / "01.jpg").write_bytes(data[: len(data) - 200])
    _refused(root, root / "images" / "01.jpg", "truncated")


def test_unreadable_file_is_refused(image_folder, monkeypatch) -> None:
    # note: the tests run as root, where chmod 000 does not stop a read; the open fails
    # as it would for another user
    root = image_folder(3)
    culprit = root / "images" / "01.png"
    real_open = Image.open

    def denied(path, *args, **kwargs):
        if Path(path) == culprit:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", denied)
    _refused(root, culprit, "unreadable image \\(PermissionError")


def test_broken_link_is_refused(image_folder, tmp_path: Path) -> None:
    root = image_folder(3)
    (root / "images" / "01.png").unlink()
    (root / "images" / "01.png").symlink_to(tmp_path / "gone.png")
    _refused(root, root / "images" / "01.png", "a broken link, not an image")


def test_decompression_bomb_is_refused(image_folder, monkeypatch) -> None:
    root = image_folder(2)
    # Pillow refuses images of more than twice MAX_IMAGE_PIXELS; 8×8 = 64 > 2×20
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    _refused(root, root / "images" / "00.png", "DecompressionBombError")


def test_float_image_is_refused(image_folder) -> None:
    root = image_folder(2)
    (root / "images" / "01.png").unlink()
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(root / "images" / "01.tif")
    _refused(root, root / "images" / "01.tif", "floating-point image")


# --- refused: the folder's structure --------------------------------------------------


def _copy_as_jpeg(root: Path) -> None:
    Image.open(root / "images/01.png").save(root / "images/01.jpg")


def _mask_9x8(root: Path) -> None:
    Image.fromarray(np.zeros((8, 9), dtype=np.uint8)).save(root / "masks/01.png")


@pytest.mark.parametrize(
    ("spoil", "culprit", "match"),
    [
        pytest.param(_copy_as_jpeg, "images/01.png", "two files share the stem '01'",
                     id="duplicate stems"),
        pytest.param(lambda root: (root / "masks/01.png").unlink(), "images/01.png",
                     "no mask with the stem '01'", id="image without mask"),
        pytest.param(lambda root: (root / "images/02.png").unlink(), "masks/02.png",
                     "no image with the stem '02'", id="mask without image"),
        pytest.param(_mask_9x8, "masks/01.png", "mask is 9x8 but its image 01.png is 8x8",
                     id="mask of another size"),
    ],
)  # fmt: skip
def test_a_folder_whose_files_do_not_pair_is_refused(image_folder, spoil, culprit, match):
    root = image_folder(3)
    spoil(root)
    _refused(root, root / culprit, match)


def test_hidden_and_foreign_files_are_skipped(image_folder) -> None:
    root = image_folder(3)
    # macOS leaves ._name resource forks and .DS_Store beside copied files
    (root / "images" / "._01.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "masks" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "images" / "notes.txt").write_text("scanned on Tuesday")
    assert read_folder(root).names == ["00", "01", "02"]


def test_upper_case_suffixes_are_images(image_folder) -> None:
    root = image_folder(2)
    (root / "images" / "01.png").rename(root / "images" / "01.PNG")
    assert read_folder(root).names == ["00", "01"]


# --- loaded: other image modes -----------------------------------------------------------


def _replace_image(root: Path, image: Image.Image, name: str = "01") -> None:
    (root / "images" / f"{name}.png").unlink()
    image.save(root / "images" / f"{name}.png")


def test_16_bit_image_is_scaled_to_8_bits(image_folder) -> None:
    root = image_folder(2)
    values = np.zeros((8, 8), dtype=np.uint16)
    values[0, :4] = [257 * 100, 65535, 32896, 128]
    _replace_image(root, Image.fromarray(values))
    assert Image.open(root / "images" / "01.png").mode == "I;16"
    image = read_folder(root).images[1]
    assert image.shape == (8, 8, 1)
    # the full 16-bit range maps to the full 8-bit one: v / 257, rounded
    assert image[0, :4, 0].tolist() == [100, 255, 128, 0]


def test_palette_image_is_read_in_its_colours(image_folder) -> None:
    root = image_folder(2)
    indices = np.zeros((8, 8), dtype=np.uint8)
    indices[:, 4:] = 1
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([10, 20, 30, 200, 0, 50] + [0, 0, 0] * 254)
    _replace_image(root, palette)
    pool = read_folder(root)
    # one colour image: the grey ones are promoted to three channels as well
    assert [image.shape for image in pool.images] == [(8, 8, 3)] * 2
    assert pool.images[1][0, 0].tolist() == [10, 20, 30]
    assert pool.images[1][0, 7].tolist() == [200, 0, 50]


def test_rgba_image_drops_its_alpha(image_folder) -> None:
    root = image_folder(2)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = [60, 120, 180]
    rgba[:4, :, 3] = 0  # transparent top half keeps its stored colour
    rgba[4:, :, 3] = 255
    _replace_image(root, Image.fromarray(rgba))
    image = read_folder(root).images[1]
    assert image.shape == (8, 8, 3)
    assert np.unique(image.reshape(-1, 3), axis=0).tolist() == [[60, 120, 180]]


def test_grey_with_alpha_stays_grey(image_folder) -> None:
    root = image_folder(2)
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 77, 128
    _replace_image(root, Image.fromarray(la, mode="LA"))
    pool = read_folder(root)
    assert pool.images[1].shape == (8, 8, 1) and set(np.unique(pool.images[1])) == {77}


def test_exif_rotated_jpeg_keeps_its_stored_pixel_order(image_folder) -> None:
    root = image_folder(2)
    wide = np.zeros((4, 8, 3), dtype=np.uint8)
    wide[:, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    (root / "images" / "01.png").unlink()
    Image.fromarray(wide).save(root / "images" / "01.jpg", exif=exif, quality=100)
    Image.fromarray(np.zeros((4, 8), dtype=np.uint8)).save(root / "masks" / "01.png")
    # not rotated: the mask was drawn on the stored pixels, and torchvision reads the same
    image = read_folder(root).images[1]
    assert image.shape == (4, 8, 3)
    assert image[:, :3].min() > 240 and image[:, 5:].max() < 15


# --- loaded: masks of other modes and values ---------------------------------------------


def _mask(root: Path, image: Image.Image, name: str = "01") -> None:
    (root / "masks" / f"{name}.png").unlink()
    image.save(root / "masks" / f"{name}.png")


def _labels(root: Path) -> Path:
    """The folder's 0/255 masks rewritten as 0/1 labels, as multi-class data holds."""
    for path in (root / "masks").iterdir():
        Image.fromarray((np.asarray(Image.open(path)) > 127).astype(np.uint8)).save(path)
    return root


def _row(values: list[int], dtype=np.uint8) -> np.ndarray:
    mask = np.zeros((8, 8), dtype=dtype)
    mask[0, : len(values)] = values
    return mask


def test_binary_mask_of_zeros_and_ones_is_taken_as_labels(image_folder) -> None:
    root = image_folder(2)
    _mask(root, Image.fromarray(_row([0, 1, 1, 0])))
    assert read_folder(root).masks[1][0, :4].tolist() == [0, 1, 1, 0]


def test_binary_mask_of_other_values_is_thresholded_at_127(image_folder) -> None:
    root = image_folder(2)
    _mask(root, Image.fromarray(_row([0, 7, 127, 128, 255])))
    assert read_folder(root).masks[1][0, :5].tolist() == [0, 0, 0, 1, 1]


def test_16_bit_binary_masks(image_folder) -> None:
    root = image_folder(3)
    _mask(root, Image.fromarray(_row([0, 65535, 32767, 32768], np.uint16)), "01")
    _mask(root, Image.fromarray(_row([0, 255, 127, 128], np.uint16)), "02")
    masks = read_folder(root).masks
    # full 16-bit masks split at 32767; 16-bit files holding 8-bit values at 127
    assert masks[1][0, :4].tolist() == [0, 1, 0, 1]
    assert masks[2][0, :4].tolist() == [0, 1, 0, 1]


def test_palette_binary_mask(image_folder) -> None:
    root = image_folder(3)
    dark = Image.fromarray(_row([0, 1, 1]), mode="P")
    dark.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # VOC's dark red for index 1
    _mask(root, dark, "01")
    shades = Image.fromarray(_row([0, 2, 3]), mode="P")
    shades.putpalette([0, 0, 0, 0, 0, 0, 250, 250, 250, 40, 40, 40] + [0] * 756)
    _mask(root, shades, "02")
    masks = read_folder(root).masks
    # indices 0/1 are the labels whatever their colour; other indices by their grey level
    assert masks[1][0, :3].tolist() == [0, 1, 1]
    assert masks[2][0, :3].tolist() == [0, 1, 0]


def test_rgba_binary_mask_is_read_by_its_grey_level(image_folder) -> None:
    root = image_folder(2)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 255, 255, 0]  # white but transparent: still foreground
    rgba[0, 1] = [255, 0, 0, 255]  # red: grey 76, background
    _mask(root, Image.fromarray(rgba))
    assert read_folder(root).masks[1][0, :2].tolist() == [1, 0]


def test_multiclass_palette_and_16_bit_masks_hold_labels(image_folder) -> None:
    root = _labels(image_folder(3))
    palette = Image.fromarray(_row([0, 2, 1]), mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # VOC's first colours
    _mask(root, palette, "01")
    _mask(root, Image.fromarray(_row([2, 1, 0], np.uint16)), "02")
    masks = read_folder(root, num_classes=3).masks
    assert masks[1][0, :3].tolist() == [0, 2, 1]
    assert masks[2][0, :3].tolist() == [2, 1, 0]


def test_multiclass_grey_rgb_mask_holds_labels(image_folder) -> None:
    root = _labels(image_folder(2))
    _mask(root, Image.fromarray(np.repeat(_row([0, 2, 1])[:, :, None], 3, axis=2)))
    assert read_folder(root, num_classes=3).masks[1][0, :3].tolist() == [0, 2, 1]


def test_multiclass_colour_mask_is_refused(image_folder) -> None:
    root = _labels(image_folder(2))
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[0, 0] = [128, 64, 128]  # a Cityscapes colour, not a class index
    _mask(root, Image.fromarray(colour))
    _refused(root, root / "masks" / "01.png", "colour mask", num_classes=3)


def test_multiclass_value_outside_the_classes_is_refused(image_folder) -> None:
    root = _labels(image_folder(2))
    _mask(root, Image.fromarray(_row([0, 1, 2, 3])))
    _refused(
        root,
        root / "masks" / "01.png",
        r"mask holds the value 3, but data.num_classes is 3 \(labels 0-2\)",
        num_classes=3,
    )


def test_ignore_value_is_kept_and_other_values_refused(image_folder) -> None:
    root = _labels(image_folder(2))
    _mask(root, Image.fromarray(_row([0, 1, 255, 2])))
    mask = read_folder(root, num_classes=3, ignore_index=255).masks[1]
    assert mask[0, :4].tolist() == [0, 1, 255, 2]
    _mask(root, Image.fromarray(_row([0, 254])))
    _refused(
        root,
        root / "masks" / "01.png",
        "holds the value 254, but data.num_classes is 3 \\(labels 0-2\\) and "
        "data.ignore_index is 255",
        num_classes=3,
        ignore_index=255,
    )


def test_binary_masks_with_an_ignore_value_hold_labels(image_folder) -> None:
    root = image_folder(2)
    _mask(root, Image.fromarray(_row([0, 1, 255])))
    assert read_folder(root, ignore_index=255).masks[1][0, :3].tolist() == [0, 1, 255]
    # with ignore_index set, 0/255 masks are labels too: 255 is void, not foreground
    assert set(np.unique(read_folder(root, ignore_index=255).masks[0]).tolist()) == {0, 255}
