"""Where images and masks come from: an image folder, a torchvision data set already on
disk, or the embedded synthetic scenes.

A source lists its examples cheaply (names and file paths, no decoding) and reads any of
them on demand, in the driver or in a Ray task on whichever node it runs. Every problem
with a file is a DataError naming the file. Masks become uint8 labels: class indices, with
`ignore_index` for pixels left out of the loss and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gridrun.layout import num_labels

__all__ = [
    "IMAGE_SUFFIXES",
    "DataError",
    "Example",
    "Files",
    "Pool",
    "Scenes",
    "TORCHVISION_SOURCES",
    "TorchvisionSource",
    "folder_files",
    "promote_to_rgb",
    "read_folder",
    "render_scene",
    "torchvision_files",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

Example = tuple[np.ndarray, np.ndarray, str]  # image (H, W, C) uint8, labels (H, W) uint8, name


class DataError(ValueError):
    """A data problem the user can fix; the message names the file."""


@dataclass
class Pool:
    """Every image of the source at its native size: images (H, W, C) uint8, masks
    (H, W) uint8 class labels (0/1 for binary)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]


_GRAY = ("1", "L", "LA")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def _read(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    # note: DecompressionBombError is neither an OSError nor a ValueError
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None


def _image_array(image: Image.Image, path: Path, rgb: bool) -> np.ndarray:
    """(H, W, 1) for grey images, (H, W, 3) otherwise (always 3 when `rgb`); uint8."""
    if image.mode == "F":
        raise DataError(f"{path}: floating-point image (mode F); save it as 8 or 16 bits")
    if image.mode in _SIXTEEN_BIT:
        arr = np.asarray(image, dtype=np.int64)
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(f"{path}: 32-bit image with values outside 0-65535")
        # note: the full 16-bit range onto 8 bits (v → round(v / 257)), so a 12-bit image
        # stored in 16 bits comes out dark rather than clipped
        grey = np.round(arr / 257).astype(np.uint8)[:, :, None]
        return np.repeat(grey, 3, axis=2) if rgb else grey
    if image.mode in _GRAY and not rgb:
        return np.asarray(image.convert("L"))[:, :, None]
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as exc:
        raise DataError(f"{path}: cannot convert mode {image.mode} to RGB ({exc})") from None


def _mask_values(mask: Image.Image, path: Path) -> np.ndarray:
    """The integer each pixel holds: palette index, grey level or 16-bit value."""
    if mask.mode in ("P", "L", *_SIXTEEN_BIT):
        return np.asarray(mask).astype(np.int64)
    if mask.mode in ("1", "LA"):
        return np.asarray(mask.convert("L")).astype(np.int64)
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask)[:, :, :3]
        if (rgb == rgb[:, :, :1]).all():
            return rgb[:, :, 0].astype(np.int64)
        raise DataError(
            f"{path}: colour mask (mode {mask.mode}); masks hold class indices, saved as "
            "grey levels (mode L) or palette indices (mode P)"
        )
    raise DataError(f"{path}: mask of mode {mask.mode}; save it as mode L, P or 16-bit grey")


def _binary_labels(mask: Image.Image, path: Path) -> np.ndarray:
    """Foreground 1, background 0: a mask holding only 0 and 1 as it is, any other by its
    grey level: > 127, or > 32767 for a 16-bit mask using more than 8 bits."""
    if mask.mode == "F":
        raise DataError(f"{path}: floating-point mask (mode F); save it as 8 or 16 bits")
    values = _mask_values(mask, path) if mask.mode in ("P", *_SIXTEEN_BIT) else None
    if values is None or (mask.mode == "P" and values.max() > 1):
        # note: a palette mask with indices beyond 1 is judged by the colour it shows
        values = np.asarray(mask.convert("L")).astype(np.int64)
    if values.min() >= 0 and values.max() <= 1:
        return values.astype(np.uint8)
    return (values > (32767 if values.max() > 255 else 127)).astype(np.uint8)


def _labels_by_table(mask: Image.Image, path: Path, table: np.ndarray, allowed: str):
    values = _mask_values(mask, path)
    inside = (values >= 0) & (values < len(table))
    labels = np.where(inside, table[np.clip(values, 0, len(table) - 1)], -1)
    bad = labels < 0
    if bad.any():
        raise DataError(f"{path}: mask holds the value {int(values[bad].max())}, but {allowed}")
    return labels.astype(np.uint8)


@dataclass(frozen=True, eq=False)
class Files:
    """Image and mask file pairs, read on demand (picklable, so a Ray task can read them
    where it runs; the paths must exist there)."""

    names: tuple[str, ...]
    images: tuple[Path, ...]
    masks: tuple[Path, ...]
    # raw mask value → label (-1: refused); None = binary masks judged by grey level
    table: np.ndarray | None
    allowed: str  # what the masks may hold, for the error message
    rgb: bool  # every image read as RGB, as torchvision does

    def __len__(self) -> int:
        return len(self.names)

    def read(self, indices: Sequence[int]) -> list[Example]:
        return [self._read_pair(int(i)) for i in indices]

    def _read_pair(self, i: int) -> Example:
        image_path, mask_path = self.images[i], self.masks[i]
        image, mask = _read(image_path), _read(mask_path)
        if image.size != mask.size:
            raise DataError(
                f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image "
                f"{image_path.name} is {image.size[0]}x{image.size[1]}"
            )
        if self.table is None:
            labels = _binary_labels(mask, mask_path)
        else:
            labels = _labels_by_table(mask, mask_path, self.table, self.allowed)
        return _image_array(image, image_path, self.rgb), labels, self.names[i]

    def missing(self) -> Path | None:
        """The first listed file that is absent, or None."""
        return next((p for p in (*self.images, *self.masks) if not p.is_file()), None)


@dataclass(frozen=True)
class Scenes:
    """Synthetic scenes 0..count-1 of data set `seed`, rendered at `size`."""

    count: int
    size: int
    seed: int

    def __len__(self) -> int:
        return self.count

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"scene{i:05d}" for i in range(self.count))

    def read(self, indices: Sequence[int]) -> list[Example]:
        return [render_scene(int(i), self.size, self.seed) for i in indices]


def render_scene(index: int, size: int, seed: int) -> Example:
    from gridrun.synthetic import render

    image, mask = render(index, size, seed=seed)
    return image, mask, f"scene{index:05d}"


def _class_table(num_classes: int, ignore_index: int | None) -> tuple[np.ndarray, str]:
    labels = num_labels(num_classes)
    table = np.full(256, -1, dtype=np.int64)
    table[:labels] = np.arange(labels)
    allowed = f"data.num_classes is {num_classes} (labels 0-{labels - 1})"
    if ignore_index is not None:
        table[ignore_index] = ignore_index
        allowed += f" and data.ignore_index is {ignore_index}"
    return table, allowed


def _files_in(folder: Path) -> dict[str, Path]:
    """Image files by stem; hidden files (.DS_Store, ._name.png) and other suffixes are
    skipped, anything that is not a regular file is refused."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if not path.is_file():
            # note: opening a named pipe would block for ever
            kind = "a directory" if path.is_dir() else "not a regular file"
            if path.is_symlink() and not path.exists():
                kind = "a broken link"
            raise DataError(f"{path}: {kind}, not an image")
        if path.stem in files:
            raise DataError(f"{path}: two files share the stem {path.stem!r}")
        files[path.stem] = path
    return files


def folder_files(root: Path, num_classes: int = 1, ignore_index: int | None = None) -> Files:
    """`root/images/*` and `root/masks/*` matched by file stem, listed but not read.

    Binary data without ignore_index keeps the grey-level rule (mask > 127); with
    ignore_index, or num_classes > 1, masks hold labels."""
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (root, image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such directory (data.path needs images/ and masks/)")
    images, masks = _files_in(image_dir), _files_in(mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for stem in sorted(images.keys() - masks.keys()):
        raise DataError(f"{images[stem]}: no mask with the stem {stem!r} in {mask_dir}")
    for stem in sorted(masks.keys() - images.keys()):
        raise DataError(f"{masks[stem]}: no image with the stem {stem!r} in {image_dir}")
    stems = sorted(images)
    table, allowed = None, ""
    if num_classes > 1 or ignore_index is not None:
        table, allowed = _class_table(num_classes, ignore_index)
    return Files(
        names=tuple(stems),
        images=tuple(images[s] for s in stems),
        masks=tuple(masks[s] for s in stems),
        table=table,
        allowed=allowed,
        rgb=False,
    )


def promote_to_rgb(images: list[np.ndarray]) -> list[np.ndarray]:
    """Grey images as three equal channels when any image is in colour."""
    if len({image.shape[2] for image in images}) < 2:
        return images
    return [np.repeat(i, 3, axis=2) if i.shape[2] == 1 else i for i in images]


def read_folder(root: Path, num_classes: int = 1, ignore_index: int | None = None) -> Pool:
    """Every pair of `root/images/*` and `root/masks/*`, read and checked."""
    files = folder_files(root, num_classes, ignore_index)
    examples = files.read(range(len(files)))
    return Pool(
        images=promote_to_rgb([image for image, _, _ in examples]),
        masks=[mask for _, mask, _ in examples],
        names=list(files.names),
    )


def _pet(root: Path, split: str) -> tuple[list[str], list[Path], list[Path]]:
    # note: read like torchvision's OxfordIIITPet, whose file lists are private attributes
    base = root / "oxford-iiit-pet"
    listing = base / "annotations" / f"{split}.txt"
    try:
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"{listing}: cannot read the split list ({exc.strerror})") from None
    images = [base / "images" / f"{i}.jpg" for i in ids]
    return ids, images, [base / "annotations" / "trimaps" / f"{i}.png" for i in ids]


def _voc(root: Path, split: str) -> tuple[list[str], list[Path], list[Path]]:
    from torchvision.datasets import VOCSegmentation

    try:
        voc = VOCSegmentation(str(root), year="2012", image_set=split, download=False)
    except OSError as exc:
        raise DataError(f"{exc.filename}: cannot read the split list ({exc.strerror})") from None
    pairs = [(Path(i), Path(m)) for i, m in zip(voc.images, voc.masks, strict=True)]
    pairs = [(i, m) for i, m in pairs if i.stem]  # a blank line in the list names no image
    return [i.stem for i, _ in pairs], [i for i, _ in pairs], [m for _, m in pairs]


def _cityscapes(root: Path, split: str) -> tuple[list[str], list[Path], list[Path]]:
    from torchvision.datasets import Cityscapes

    city = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
    # note: torchvision lists files in directory order, which differs between machines
    pairs = sorted((Path(i), Path(t[0])) for i, t in zip(city.images, city.targets, strict=True))
    names = [i.name.removesuffix("_leftImg8bit.png") for i, _ in pairs]
    return names, [i for i, _ in pairs], [t for _, t in pairs]


def _voc_labels(ignore: int) -> tuple[np.ndarray, str]:
    table = np.full(256, -1, dtype=np.int64)
    table[:21], table[255] = np.arange(21), ignore
    return table, "VOCSegmentation masks hold classes 0-20 and 255 (border)"


def _pet_labels(ignore: int) -> tuple[np.ndarray, str]:
    table = np.full(256, -1, dtype=np.int64)
    # trimaps: 1 pet, 2 background, 3 the uncertain border around the pet
    table[1], table[2], table[3] = 1, 0, ignore
    return table, "OxfordIIITPet trimaps hold 1 (pet), 2 (background) and 3 (border)"


def _cityscapes_labels(ignore: int) -> tuple[np.ndarray, str]:
    from torchvision.datasets import Cityscapes

    table = np.full(256, -1, dtype=np.int64)
    for c in Cityscapes.classes:
        if c.id >= 0:
            table[c.id] = c.train_id if 0 <= c.train_id < 255 else ignore
    return table, "Cityscapes *_gtFine_labelIds.png masks hold label ids 0-33"


@dataclass(frozen=True)
class TorchvisionSource:
    """A torchvision segmentation data set read from data.root, never downloaded.

    ``classes``: the num_classes it can be read with, ``splits`` its splits (the first of
    each is the default); ``folders`` what data.root must hold (``{split}`` filled in) and
    ``how`` to get them; ``files`` lists a split's (names, images, masks) without reading
    them; ``labels`` maps a mask value to its class (-1: refused) given the ignore index,
    with a sentence saying what the masks hold."""

    classes: tuple[int, ...]
    splits: tuple[str, ...]
    folders: tuple[str, ...]
    how: str
    files: Callable[[Path, str], tuple[list[str], list[Path], list[Path]]]
    labels: Callable[[int], tuple[np.ndarray, str]]


# torch-free, so that the grid parser (gridrun.spec) validates names, classes and splits
TORCHVISION_SOURCES: dict[str, TorchvisionSource] = {
    "VOCSegmentation": TorchvisionSource(
        (21,), ("train", "val", "trainval"),
        ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/SegmentationClass",
         "VOCdevkit/VOC2012/ImageSets/Segmentation"),
        "torchvision.datasets.VOCSegmentation(root, year='2012', image_set='{split}', "
        "download=True) once on a machine with internet, then copy root here",
        _voc, _voc_labels,
    ),
    # pet against background: binary (1) or two classes (2); trimap borders are ignored
    "OxfordIIITPet": TorchvisionSource(
        (1, 2), ("trainval", "test"),
        ("oxford-iiit-pet/images", "oxford-iiit-pet/annotations/trimaps"),
        "torchvision.datasets.OxfordIIITPet(root, split='{split}', "
        "target_types='segmentation', download=True) once on a machine with internet, "
        "then copy root here",
        _pet, _pet_labels,
    ),
    # the 19 trainId classes; every other label is ignored
    "Cityscapes": TorchvisionSource(
        (19,), ("train", "val"),
        ("leftImg8bit/{split}", "gtFine/{split}"),
        "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
        "https://www.cityscapes-dataset.com (free registration) and unzip both in root",
        _cityscapes, _cityscapes_labels,
    ),
}  # fmt: skip


def torchvision_files(name: str, root: Path, split: str, ignore_index: int) -> Files:
    """A torchvision segmentation data set already under `root`, listed but not read;
    nothing is ever downloaded. Void pixels (VOC borders, trimap borders, Cityscapes
    labels without a trainId) become `ignore_index`."""
    source = TORCHVISION_SOURCES[name]
    folders = source.folders
    for folder in (root, *(root / f.format(split=split) for f in folders)):
        if not folder.is_dir():
            layout = ", ".join(f.format(split=split) + "/" for f in folders)
            raise DataError(
                f"{folder}: no such directory; data.root for {name} must hold {layout}. "
                f"To get it: {source.how.format(split=split)}"
            )
    try:
        names, images, masks = source.files(root, split)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise DataError(f"{root}: {name}: {exc}") from None
    if not names:
        raise DataError(f"{root}: {name} split {split!r} lists no images")
    table, allowed = source.labels(ignore_index)
    return Files(tuple(names), tuple(images), tuple(masks), table, allowed, rgb=True)
