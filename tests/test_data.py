"""Data: the folder loader on real and broken folders, the split, and resizing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridrun.data import DataError, check, prepare, read_folder, resize_images, resize_masks
from gridrun.spec import parse_grid


def _folder_grid(path: Path, image_size, dataset_size, **data):
    return parse_grid(
        {
            "data": {"source": "folder", "path": str(path), **data},
            "factors": {
                "image_size": image_size,
                "dataset_size": dataset_size,
                "epochs": [1],
                "batch_size": [4],
            },
        }
    )


@pytest.fixture(scope="module")
def membrane_pool(membrane: Path):
    return read_folder(membrane)


@pytest.fixture(scope="module")
def prepared_two(membrane: Path):
    """Membrane at image_size 32 and 48, dataset_size 12 and 24, six for validation."""
    return prepare(_folder_grid(membrane, [48, 32], [12, 24], val_size=6))


@pytest.fixture(scope="module")
def prepared_one(membrane: Path):
    return prepare(_folder_grid(membrane, [32], [12], val_size=6))


def test_read_folder_on_membrane(membrane_pool) -> None:
    pool = membrane_pool
    assert len(pool.images) == len(pool.masks) == len(pool.names) == 30
    assert pool.names == [f"{i:02d}" for i in range(30)]
    assert all(image.shape == (512, 512, 1) and image.dtype == np.uint8 for image in pool.images)
    assert all(mask.shape == (512, 512) for mask in pool.masks)
    # 0/255 masks become labels 0/1; ~78% of pixels are cell interior (255)
    assert set(np.unique(np.stack(pool.masks)).tolist()) == {0, 1}
    assert np.mean([mask.mean() for mask in pool.masks]) == pytest.approx(0.78, abs=0.02)


def test_prepare_shapes_on_membrane(prepared_two) -> None:
    p = prepared_two
    assert p.in_channels == 1 and p.num_labels == 2
    # validation truth lives at the evaluation resolution: the largest image_size
    assert p.eval_size == 48
    assert p.val_y.shape == (6, 48, 48)
    assert set(np.unique(p.val_y).tolist()) == {0, 1}
    assert sorted(p.sizes) == [32, 48]
    for size, arrays in p.sizes.items():
        assert arrays.train_x.shape == (24, 1, size, size) and arrays.train_x.dtype == np.uint8
        assert arrays.train_y.shape == (24, size, size)
        assert arrays.val_x.shape == (6, 1, size, size)
    assert len(p.train_names) == 24 and len(p.val_names) == 6
    assert not set(p.train_names) & set(p.val_names)


def test_validation_set_does_not_depend_on_dataset_size_levels(prepared_one, prepared_two) -> None:
    assert prepared_one.val_names == prepared_two.val_names
    np.testing.assert_array_equal(prepared_one.sizes[32].val_x, prepared_two.sizes[32].val_x)


def test_training_subsets_are_nested(prepared_one, prepared_two) -> None:
    assert prepared_one.train_names == prepared_two.train_names[:12]
    small, large = prepared_one.sizes[32], prepared_two.sizes[32]
    np.testing.assert_array_equal(small.train_x, large.train_x[:12])
    np.testing.assert_array_equal(small.train_y, large.train_y[:12])


def test_prepared_arrays_are_the_named_files_resized(membrane: Path, prepared_two) -> None:
    name = prepared_two.train_names[0]
    image = np.asarray(Image.open(membrane / "images" / f"{name}.png"))[:, :, None]
    mask = (np.asarray(Image.open(membrane / "masks" / f"{name}.png")) > 127).astype(np.uint8)
    np.testing.assert_array_equal(prepared_two.sizes[32].train_x[0], resize_images([image], 32)[0])
    np.testing.assert_array_equal(prepared_two.sizes[32].train_y[0], resize_masks([mask], 32)[0])


def test_resize_images_blends_and_masks_keep_their_labels() -> None:
    checker = (np.indices((6, 6)).sum(axis=0) % 2).astype(np.uint8)
    image = (checker * 255)[:, :, None]
    mask = checker * 3  # labels 0 and 3
    resized = resize_images([image], 9)
    assert resized.shape == (1, 1, 9, 9) and resized.dtype == np.uint8
    # bilinear blends neighbours: grey levels appear between black and white
    assert len(set(np.unique(resized).tolist()) - {0, 255}) > 0
    masks = resize_masks([mask], 9)
    assert masks.shape == (1, 9, 9) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 3}


def test_resize_masks_of_membrane_keep_binary_labels(membrane_pool) -> None:
    masks = resize_masks(membrane_pool.masks[:3], 37)
    assert set(np.unique(masks).tolist()) == {0, 1}


def test_resize_to_the_same_size_is_identity() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_images([image], 5)[0], image.transpose(2, 0, 1))


def test_resize_of_a_constant_image_keeps_its_value() -> None:
    image = np.full((10, 7, 1), 200, dtype=np.uint8)
    assert set(np.unique(resize_images([image], 4)).tolist()) == {200}


def test_mask_of_another_size_names_the_mask(image_folder) -> None:
    root = image_folder(3)
    Image.fromarray(np.zeros((8, 9), dtype=np.uint8)).save(root / "masks" / "01.png")
    with pytest.raises(DataError, match="8x9|9x8") as info:
        read_folder(root)
    assert str(root / "masks" / "01.png") in str(info.value)


def test_corrupt_image_names_the_file(image_folder) -> None:
    root = image_folder(3)
    (root / "images" / "02.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match="unreadable") as info:
        read_folder(root)
    assert str(root / "images" / "02.png") in str(info.value)


def test_truncated_image_names_the_file(membrane: Path, tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        shutil.copy(membrane / sub / "00.png", tmp_path / sub / "00.png")
    data = (membrane / "images" / "01.png").read_bytes()
    (tmp_path / "images" / "01.png").write_bytes(data[: len(data) // 2])
    shutil.copy(membrane / "masks" / "01.png", tmp_path / "masks" / "01.png")
    with pytest.raises(DataError) as info:
        read_folder(tmp_path)
    assert str(tmp_path / "images" / "01.png") in str(info.value)


def test_image_without_mask_names_it(image_folder) -> None:
    root = image_folder(3)
    (root / "masks" / "01.png").unlink()
    with pytest.raises(DataError, match="no mask") as info:
        read_folder(root)
    assert str(root / "images" / "01.png") in str(info.value)


def test_mask_without_image_names_it(image_folder) -> None:
    root = image_folder(3)
    (root / "images" / "02.png").unlink()
    with pytest.raises(DataError, match="no image") as info:
        read_folder(root)
    assert str(root / "masks" / "02.png") in str(info.value)


def test_missing_masks_folder_is_named(image_folder) -> None:
    root = image_folder(2)
    shutil.rmtree(root / "masks")
    with pytest.raises(DataError, match="masks"):
        read_folder(root)


def test_dataset_size_larger_than_the_training_images(image_folder) -> None:
    root = image_folder(10)
    # 10 images, 2 for validation: 8 can train
    assert check(_folder_grid(root, [8], [8], val_size=2)) == (2, 10)
    with pytest.raises(DataError, match="dataset_size") as info:
        check(_folder_grid(root, [8], [4, 9], val_size=2))
    assert "9" in str(info.value)


def test_multiclass_mask_with_a_class_too_large_names_the_file(image_folder) -> None:
    root = image_folder(3)
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[0, :3] = [0, 1, 2]
    for i in range(3):
        Image.fromarray(labels).save(root / "masks" / f"{i:02d}.png")
    assert set(np.unique(np.stack(read_folder(root, num_classes=3).masks)).tolist()) == {0, 1, 2}
    labels[5, 5] = 3
    Image.fromarray(labels).save(root / "masks" / "01.png")
    with pytest.raises(DataError, match="class 3") as info:
        read_folder(root, num_classes=3)
    assert str(root / "masks" / "01.png") in str(info.value)


def test_rgb_and_grayscale_mix_is_promoted_to_three_channels(image_folder) -> None:
    root = image_folder(3)
    gray = np.asarray(Image.open(root / "images" / "00.png"))
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(root / "images" / "01.png")
    pool = read_folder(root)
    assert [image.shape for image in pool.images] == [(8, 8, 3)] * 3
    # a grey image becomes three equal channels; colour is kept as it was
    for channel in range(3):
        np.testing.assert_array_equal(pool.images[0][..., channel], gray)
    np.testing.assert_array_equal(pool.images[1], colour)


def test_prepare_on_an_rgb_folder_has_three_input_channels(image_folder) -> None:
    root = image_folder(6)
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(root / "images" / "03.png")
    prepared = prepare(_folder_grid(root, [4], [4], val_size=2))
    assert prepared.in_channels == 3
    assert prepared.sizes[4].train_x.shape == (4, 3, 4, 4)
    assert prepared.val_y.shape == (2, 4, 4)


def test_scenes_rendered_on_many_cores_equal_those_rendered_on_one(monkeypatch) -> None:
    import gridrun.data as data

    monkeypatch.setattr(data, "PARALLEL_MPIX", float("inf"))
    serial = data.render_scenes([3, 0, 5], 32, seed=1)
    monkeypatch.setattr(data, "PARALLEL_MPIX", 0.0)
    monkeypatch.setattr(data.os, "cpu_count", lambda: 2)
    parallel = data.render_scenes([3, 0, 5], 32, seed=1)
    assert [name for _, _, name in parallel] == ["scene00003", "scene00000", "scene00005"]
    for (image_a, mask_a, _), (image_b, mask_b, _) in zip(serial, parallel, strict=True):
        assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)
