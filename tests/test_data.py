"""Data: the folder loader on real data, torchvision layouts, the split, resizing, and
preparation here and on Ray. Hostile folders are in test_data_hostile.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gridrun.data import (
    DataError,
    check,
    prepare,
    prepare_on_ray,
    read_folder,
    resize_images,
    resize_masks,
    validation_examples,
)
from gridrun.spec import GridError, parse_grid


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


def test_missing_masks_folder_is_named(image_folder) -> None:
    root = image_folder(2)
    shutil.rmtree(root / "masks")
    with pytest.raises(DataError) as info:
        read_folder(root)
    assert str(info.value) == (
        f"{root / 'masks'}: no such directory (data.path needs images/ and masks/)"
    )


def test_dataset_size_larger_than_the_training_images(image_folder) -> None:
    root = image_folder(10)
    # 10 images, 2 for validation: 8 can train
    assert check(_folder_grid(root, [8], [8], val_size=2)) == (2, 0, 10)
    with pytest.raises(DataError) as info:
        check(_folder_grid(root, [8], [4, 9], val_size=2))
    assert str(info.value) == (
        "factors.dataset_size: 9 training images asked for but data.path leaves 8 "
        "after 2 for validation"
    )


def test_a_test_split_is_disjoint_seeded_and_leaves_validation_as_it_was(membrane) -> None:
    plain = prepare(_folder_grid(membrane, [32], [12], val_fraction=0.2))
    tested = prepare(_folder_grid(membrane, [32], [12], val_fraction=0.2, test_fraction=0.2))
    # without a test split, validation is the first images of the seeded permutation
    order = np.random.default_rng(0).permutation(30)
    assert plain.val_names == [f"{i:02d}" for i in np.sort(order[:6])]
    assert plain.test_names == [] and plain.test_y is None and "test" not in plain.splits
    assert plain.sizes[32].test_x is None
    # a test split is drawn after validation: validation does not move
    assert tested.val_names == plain.val_names
    assert tested.test_names == [f"{i:02d}" for i in np.sort(order[6:12])]
    assert tested.train_names == [f"{i:02d}" for i in order[12:24]]
    names = [tested.val_names, tested.test_names, tested.train_names]
    assert sum(map(len, names)) == len(set().union(*names)) == 24
    assert tested.sizes[32].test_x.shape == (6, 1, 32, 32) and tested.test_y.shape == (6, 32, 32)
    again = prepare(_folder_grid(membrane, [32], [12], val_fraction=0.2, test_size=6))
    assert again.test_names == tested.test_names
    assert again.test_y.tobytes() == tested.test_y.tobytes()
    other = prepare(_folder_grid(membrane, [32], [12], test_size=6, split_seed=1))
    assert other.test_names != tested.test_names


def test_split_truth_counts_pixels_per_label_at_eval_size(prepared_two) -> None:
    truth = prepared_two.splits["val"]
    assert truth.images == 6 and truth.ignored_pixels == 0
    y = prepared_two.val_y
    assert truth.class_pixels == (int((y == 0).sum()), int((y == 1).sum()))
    assert sum(truth.class_pixels) == 6 * 48 * 48


def test_a_test_split_that_leaves_too_few_training_images_is_named(image_folder) -> None:
    root = image_folder(10)
    assert check(_folder_grid(root, [8], [5], val_size=2, test_size=3)) == (2, 3, 10)
    with pytest.raises(DataError) as info:
        check(_folder_grid(root, [8], [6], val_size=2, test_size=3))
    assert str(info.value) == (
        "factors.dataset_size: 6 training images asked for but data.path leaves 5 "
        "after 2 for validation and 3 for testing (data.test_size)"
    )


def test_synthetic_data_with_a_test_split_holds_enough_scenes() -> None:
    grid = parse_grid(
        {
            "data": {"source": "synthetic", "test_fraction": 0.3},
            "factors": {"image_size": [8], "dataset_size": [7], "epochs": [1], "batch_size": [1]},
        }
    )
    split = check(grid)
    assert split.total - split.val - split.test >= 7 and split.test >= 1
    prepared = prepare(grid)
    assert len(prepared.test_names) == split.test and len(prepared.train_names) == 7


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


def test_resize_masks_keep_the_ignore_value() -> None:
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[:, 2:4] = 255  # a void band between classes 0 and 7
    mask[:, 4:] = 7
    resized = resize_masks([mask], 9)
    assert set(np.unique(resized).tolist()) == {0, 7, 255}
    assert resized[0, 0].tolist() == [0, 0, 0, 255, 255, 255, 7, 7, 7]


def test_prepare_keeps_the_first_validation_images_for_overlays(membrane, prepared_two) -> None:
    images, truth = prepared_two.examples
    assert images.shape == (4, 48, 48, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(truth, prepared_two.val_y[:4])
    # grey images repeated to three channels, resized like every validation image
    first = np.asarray(Image.open(membrane / "images" / f"{prepared_two.val_names[0]}.png"))
    expected = resize_images([first[:, :, None]], 48)[0, 0]
    for channel in range(3):
        np.testing.assert_array_equal(images[0, :, :, channel], expected)


def test_validation_examples_are_the_prepared_validation_images(prepared_two, membrane) -> None:
    grid = _folder_grid(membrane, [48, 32], [12, 24], val_size=6)
    examples = validation_examples(grid, 2)
    assert [name for _, _, name in examples] == prepared_two.val_names[:2]


# --- torchvision data sets already on disk, in tiny copies of their layouts --------------


def _tv_grid(root: Path, name: str, **data):
    loss = "bce_dice" if name == "OxfordIIITPet" and data.get("num_classes", 1) == 1 else "ce"
    return parse_grid(
        {
            "data": {"source": "torchvision", "name": name, "root": str(root), **data},
            "train": {"loss": loss},
            "factors": {"image_size": [12], "dataset_size": [4], "epochs": [1], "batch_size": [2]},
        }
    )


def _check_prepared(prepared, masks: dict[str, np.ndarray]) -> None:
    """Every prepared mask is its file's labels (image_size = native size: no resizing)."""
    assert sorted(prepared.val_names + prepared.train_names) == sorted(masks)
    for i, name in enumerate(prepared.val_names):
        np.testing.assert_array_equal(prepared.val_y[i], masks[name])
    for i, name in enumerate(prepared.train_names):
        np.testing.assert_array_equal(prepared.sizes[12].train_y[i], masks[name])


@pytest.fixture
def voc(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A VOC2012 layout: six 12×12 images, palette masks of classes 0-6, a 255 border."""
    base = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    masks = {}
    for i in range(6):
        name = f"2007_{i:06d}"
        Image.fromarray(np.full((12, 12, 3), 30 * i, np.uint8)).save(
            base / "JPEGImages" / f"{name}.jpg"
        )
        mask = np.zeros((12, 12), np.uint8)
        mask[2:6, 2:6] = i + 1
        mask[6, :] = 255  # VOC's border band around objects: ignored
        image = Image.fromarray(mask, mode="P")
        image.putpalette([k * 9 % 256 for k in range(768)])
        image.save(base / "SegmentationClass" / f"{name}.png")
        masks[name] = mask
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(masks) + "\n")
    return tmp_path / "voc", masks


def test_voc_layout_loads_classes_and_border(voc) -> None:
    root, masks = voc
    grid = _tv_grid(root, "VOCSegmentation", val_size=2)
    assert (grid.data.num_classes, grid.data.ignore_index, grid.data.split) == (21, 255, "train")
    prepared = prepare(grid)
    assert (prepared.in_channels, prepared.num_labels) == (3, 21)
    _check_prepared(prepared, masks)
    assert int((prepared.val_y == 255).sum()) == 2 * 12
    assert check(grid) == (2, 0, 6)


def test_voc_mask_value_outside_its_classes_names_the_file(voc) -> None:
    root, masks = voc
    path = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000003.png"
    bad = masks["2007_000003"].copy()
    bad[0, 0] = 21
    image = Image.fromarray(bad, mode="P")
    image.putpalette(Image.open(path).getpalette())
    image.save(path)
    with pytest.raises(DataError) as info:
        prepare(_tv_grid(root, "VOCSegmentation", val_size=2))
    assert str(info.value) == (
        f"{path}: mask holds the value 21, but VOCSegmentation masks hold classes 0-20 "
        "and 255 (border)"
    )


def test_voc_listed_file_missing_is_named_by_check(voc) -> None:
    root, _ = voc
    missing = root / "VOCdevkit/VOC2012/JPEGImages/2007_000004.jpg"
    missing.unlink()
    with pytest.raises(DataError) as info:
        check(_tv_grid(root, "VOCSegmentation", val_size=2))
    assert str(info.value) == f"{missing}: listed in the 'train' split but missing"


def test_torchvision_root_missing_says_what_to_get(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        check(_tv_grid(tmp_path / "absent", "VOCSegmentation"))
    assert str(info.value) == (
        f"{tmp_path / 'absent'}: no such directory; data.root for VOCSegmentation must "
        "hold VOCdevkit/VOC2012/JPEGImages/, VOCdevkit/VOC2012/SegmentationClass/, "
        "VOCdevkit/VOC2012/ImageSets/Segmentation/. To get it: "
        "torchvision.datasets.VOCSegmentation(root, year='2012', image_set='train', "
        "download=True) once on a machine with internet, then copy root here"
    )


def test_torchvision_missing_sub_folder_is_named(voc) -> None:
    root, _ = voc
    shutil.rmtree(root / "VOCdevkit/VOC2012/SegmentationClass")
    with pytest.raises(DataError) as info:
        prepare(_tv_grid(root, "VOCSegmentation", val_size=2))
    assert str(info.value).startswith(
        f"{root / 'VOCdevkit/VOC2012/SegmentationClass'}: no such directory; data.root for "
        "VOCSegmentation must hold"
    )


@pytest.fixture
def pet(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """An Oxford-IIIT Pet layout: six trimaps of 1 (pet), 2 (background), 3 (border)."""
    base = tmp_path / "pets" / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    labels, lines = {}, []
    for i in range(6):
        name = f"{'Abyssinian' if i % 2 else 'beagle'}_{i + 1}"
        rgb = np.full((12, 12, 3), 40 * i, np.uint8)
        Image.fromarray(rgb).save(base / "images" / f"{name}.jpg")
        trimap = np.full((12, 12), 2, np.uint8)
        trimap[3:9, 3:9] = 3
        trimap[4:8, 4:8] = 1
        Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{name}.png")
        label = np.zeros((12, 12), np.uint8)
        label[3:9, 3:9] = 255
        label[4:8, 4:8] = 1
        labels[name] = label
        lines.append(f"{name} {1 + i % 2} {1 + i % 2} 1")
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "pets", labels


@pytest.mark.parametrize("num_classes", [1, 2])
def test_pet_trimaps_become_pet_background_and_ignored_border(pet, num_classes) -> None:
    root, labels = pet
    grid = _tv_grid(root, "OxfordIIITPet", val_size=2, num_classes=num_classes)
    assert (grid.data.ignore_index, grid.data.split) == (255, "trainval")
    prepared = prepare(grid)
    assert (prepared.in_channels, prepared.num_labels) == (3, 2)
    _check_prepared(prepared, labels)
    # per 12×12 trimap: 16 pet, 20 border, 108 background pixels
    assert np.unique(prepared.val_y, return_counts=True)[1].tolist() == [216, 32, 40]


def test_cityscapes_label_ids_become_train_ids(tmp_path: Path) -> None:
    root, expected = tmp_path / "cityscapes", {}
    ids = np.tile(np.array([7, 26, 0, 24, 9, 33], np.uint8), (12, 2))
    train_ids = {7: 0, 26: 13, 0: 255, 24: 11, 9: 255, 33: 18}
    for city, count in (("bremen", 3), ("aachen", 3)):
        (root / "leftImg8bit" / "train" / city).mkdir(parents=True)
        (root / "gtFine" / "train" / city).mkdir(parents=True)
        for i in range(count):
            stem = f"{city}_000000_{i:06d}"
            image = np.full((12, 12, 3), 10 * i, np.uint8)
            Image.fromarray(image).save(
                root / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png"
            )
            label_ids = np.roll(ids, i, axis=1)
            Image.fromarray(label_ids).save(
                root / "gtFine/train" / city / f"{stem}_gtFine_labelIds.png"
            )
            expected[stem] = np.vectorize(train_ids.get)(label_ids).astype(np.uint8)
    grid = _tv_grid(root, "Cityscapes", val_size=2)
    assert (grid.data.num_classes, grid.data.split) == (19, "train")
    prepared = prepare(grid)
    assert prepared.num_labels == 19
    _check_prepared(prepared, expected)


def test_torchvision_keys_are_checked_in_the_grid() -> None:
    def error(**data) -> str:
        with pytest.raises(GridError) as info:
            _tv_grid(Path("/data"), **data)
        return str(info.value)

    assert error(name="VOCSegmentation", num_classes=20) == (
        "grid: data: num_classes: VOCSegmentation is read with num_classes 21, not 20"
    )
    assert error(name="Cityscape") == (
        "grid: data: name: unknown data set 'Cityscape' (did you mean 'Cityscapes'?); "
        "one of VOCSegmentation, OxfordIIITPet, Cityscapes"
    )
    assert error(name="OxfordIIITPet", split="train") == (
        "grid: data: split: OxfordIIITPet has the splits trainval, test, not 'train'"
    )
    assert error(name="Cityscapes", ignore_index=3) == (
        "grid: data: ignore_index: 3 is a class label when num_classes is 19; use a value "
        "from 19 to 255, e.g. 255"
    )


def test_folder_grids_default_to_no_ignore_index(image_folder) -> None:
    grid = _folder_grid(image_folder(2), [8], [4])
    assert grid.data.ignore_index is None


def test_torchvision_root_is_relative_to_the_grid_file(tmp_path: Path) -> None:
    grid = _tv_grid(Path("../sets/voc"), "VOCSegmentation")
    resolved = grid.data.relative_to(tmp_path / "grids")
    assert resolved.root == (tmp_path / "sets" / "voc").resolve()
    assert grid.data.relative_to(tmp_path).path is None


# --- prepare_on_ray: the same arrays, made by Ray tasks ----------------------------------


@pytest.fixture
def ray_two_nodes(ray_cluster):
    """The session's cluster (tests/fixtures_ray.py): two nodes of one CPU each."""
    import ray

    return ray


def _assert_same(local, remote, ray) -> None:
    assert isinstance(remote.val_y, ray.ObjectRef)
    assert all(isinstance(ref, ray.ObjectRef) for ref in remote.sizes.values())
    assert (remote.in_channels, remote.num_labels, remote.eval_size) == (
        local.in_channels,
        local.num_labels,
        local.eval_size,
    )
    assert (remote.train_names, remote.val_names) == (local.train_names, local.val_names)
    assert ray.get(remote.val_y).tobytes() == local.val_y.tobytes()
    # the driver gets the splits' counts, never their truth
    assert remote.splits == local.splits and remote.test_names == local.test_names
    if local.test_y is not None:
        assert ray.get(remote.test_y).tobytes() == local.test_y.tobytes()
    assert sorted(remote.sizes) == sorted(local.sizes)
    for size, ref in remote.sizes.items():
        arrays = ray.get(ref)
        for name in ("train_x", "train_y", "val_x", "test_x"):
            a, b = getattr(arrays, name), getattr(local.sizes[size], name)
            if b is None:
                assert a is None
                continue
            assert a.shape == b.shape and a.tobytes() == b.tobytes(), (size, name)
    for a, b in zip(remote.examples, local.examples, strict=True):
        assert a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.ray
def test_prepare_on_ray_renders_scenes_on_both_nodes(ray_two_nodes) -> None:
    grid = parse_grid(
        {
            "data": {"source": "synthetic", "val_size": 5, "eval_size": 40},
            "factors": {"image_size": [16, 24], "dataset_size": [6, 11], "epochs": [1],
                        "batch_size": [2]},
        }
    )  # fmt: skip
    remote = prepare_on_ray(grid, chunk_size=3)
    _assert_same(prepare(grid), remote, ray_two_nodes)
    # SPREAD: the chunks were read on both nodes, by worker processes, not the driver
    nodes = {worker.split(":")[0] for worker in remote.workers}
    pids = {worker.split(":")[1] for worker in remote.workers}
    assert len(nodes) == 2 and len(pids) >= 2 and str(os.getpid()) not in pids


@pytest.mark.ray
def test_prepare_on_ray_reads_a_folder_mixing_grey_and_colour(image_folder, ray_two_nodes):
    root = image_folder(9)
    # one colour image in one chunk: every chunk's grey images get three channels
    colour = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(colour).save(root / "images" / "05.png")
    grid = _folder_grid(root, [4, 6], [4], val_size=3, test_size=2)
    remote = prepare_on_ray(grid, chunk_size=2)
    assert remote.in_channels == 3
    _assert_same(prepare(grid), remote, ray_two_nodes)


@pytest.mark.ray
def test_prepare_on_ray_of_membrane_matches_prepare(membrane, prepared_two, ray_two_nodes):
    remote = prepare_on_ray(_folder_grid(membrane, [48, 32], [12, 24], val_size=6))
    _assert_same(prepared_two, remote, ray_two_nodes)


@pytest.mark.ray
def test_a_bad_file_read_in_a_task_is_one_data_error(image_folder, ray_two_nodes) -> None:
    root = image_folder(6)
    (root / "images" / "04.png").write_bytes(b"")
    with pytest.raises(DataError) as info:
        prepare_on_ray(_folder_grid(root, [4], [4], val_size=2), chunk_size=2)
    message = str(info.value)
    assert message.startswith(f"{root / 'images' / '04.png'}: unreadable image")
    assert "\n" not in message and "RayTaskError" not in message


def test_prepare_keeps_as_many_examples_as_asked(image_folder) -> None:
    grid = _folder_grid(image_folder(8), [4], [4], val_size=3, eval_size=6)
    images, truth = prepare(grid, shown=2).examples
    assert images.shape == (2, 6, 6, 3) and truth.shape == (2, 6, 6)
    images, truth = prepare(grid, shown=0).examples
    assert images.shape == (0, 6, 6, 3) and truth.shape == (0, 6, 6)
    # no more than the validation set holds
    assert prepare(grid, shown=5).examples[0].shape == (3, 6, 6, 3)
