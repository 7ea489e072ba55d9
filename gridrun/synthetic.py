"""The embedded data set: procedural aerial-like road scenes, rendered at any size.

A scene is pure geometry in the unit square, drawn from ``(seed, index)`` alone:
curving, branching roads of widths from ~0.004 to ~0.03 of the image side, laid
over a patchwork of textured fields, grey yards, buildings and trees. ``render``
rasterizes one scene at a requested size, so the same index at 128 and 256 px is
the same place photographed at two resolutions. Thin roads shrink below a pixel
at low resolution, which is what makes image size a real factor in a grid.

The mask is exact: a pixel is road when its centre lies within half a road's
width of the road's centreline. The image is supersampled and area-averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["Road", "Scene", "make_scene", "render"]

RGB = tuple[int, int, int]

_STEP = 0.005  # centreline vertex spacing, in image sides
_TEXTURE_GRID = 64  # side of the stored low-frequency texture fields
_MIN_SUPERSAMPLED = 256  # small images are supersampled more, so thin roads blend in smoothly

_GROUND: tuple[RGB, ...] = ((92, 112, 58), (104, 118, 66), (84, 100, 52), (112, 114, 74))
_CROPS: tuple[RGB, ...] = (
    (82, 124, 52),  # green crop
    (148, 154, 82),  # ripening crop
    (188, 170, 112),  # stubble / wheat
    (126, 98, 68),  # ploughed soil
    (98, 84, 64),  # dark soil
    (142, 132, 114),  # dry, greyish soil: overlaps asphalt and concrete
    (118, 116, 110),  # bare grey earth
    (156, 152, 142),  # gravel / chalky soil
    (70, 104, 48),  # pasture
)
_ROOFS: tuple[RGB, ...] = (
    (120, 120, 122),
    (150, 148, 146),
    (100, 102, 108),
    (166, 86, 64),
    (190, 190, 184),
    (128, 70, 56),
)
_TREE: RGB = (46, 72, 38)
_SHADOW: RGB = (40, 44, 36)
_TRACK: RGB = (160, 146, 116)


@dataclass(frozen=True)
class Road:
    """One road: a centreline polyline in unit coordinates and its constant width."""

    points: np.ndarray  # (k, 2) float64, x then y, may extend slightly past the border
    width: float  # in image sides
    color: RGB


@dataclass(frozen=True)
class _Parcel:
    corners: np.ndarray  # (4, 2) quadrilateral
    color: RGB
    stripe_frequency: float  # cycles per image side; 0 means no plough lines
    stripe_angle: float


@dataclass(frozen=True)
class _Patch:
    corners: np.ndarray  # (k, 2) polygon: a yard, a roof or a shadow
    color: RGB


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one scene at any size; depends only on (seed, index)."""

    roads: tuple[Road, ...]
    ground: RGB
    parcels: tuple[_Parcel, ...]
    tracks: tuple[tuple[np.ndarray, float, RGB], ...]  # straight non-road lines: ends, width, color
    patches: tuple[_Patch, ...]  # drawn in order, shadows before the roofs that cast them
    trees: np.ndarray  # (k, 4): x, y, radius, brightness
    saturation: float  # washed-out scenes make "grey" a poor cue for "road"
    texture: np.ndarray  # (4, 64, 64): brightness, green/brown tint, grain, saturation


def _jitter(rng: np.random.Generator, color: RGB, amount: float) -> RGB:
    r, g, b = np.clip(np.asarray(color) + rng.normal(0.0, amount, 3), 0, 255).round().astype(int)
    return int(r), int(g), int(b)


def _rotated_rect(center: np.ndarray, angle: float, length: float, depth: float) -> np.ndarray:
    along = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    across = np.array([-np.sin(angle), np.cos(angle)]) * depth / 2
    return center + np.array([-along - across, along - across, along + across, -along + across])


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float) -> np.ndarray:
    """A smooth random walk from `start`, cut where it first leaves the (padded) image."""
    steps = max(int(length / _STEP), 2)
    # Curvature is smoothed white noise (unit std) plus a bias, so roads bend gently and
    # some keep turning one way; the scale varies from near-straight highways to lanes.
    kernel = np.hanning(31)
    kernel /= np.sqrt((kernel**2).sum())
    curvature = np.convolve(rng.normal(size=steps), kernel, mode="same")
    curvature = curvature * rng.uniform(0.5, 4.0) + rng.normal(0.0, 0.8)
    headings = heading + np.cumsum(curvature) * _STEP
    moves = _STEP * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    points = np.vstack([start, start + np.cumsum(moves, axis=0)])
    outside = np.any((points < -0.04) | (points > 1.04), axis=1)
    end = int(np.argmax(outside)) + 1 if outside.any() else len(points)
    return points[:end]


def _roads(rng: np.random.Generator) -> list[Road]:
    roads: list[Road] = []
    for _ in range(rng.integers(2, 6)):
        # A main road passes through an interior point, walked out both ways.
        through = rng.uniform(0.15, 0.85, 2)
        heading = rng.uniform(0, 2 * np.pi)
        forward = _walk(rng, through, heading, 2.0)
        backward = _walk(rng, through, heading + np.pi, 2.0)
        width = float(np.exp(rng.uniform(np.log(0.006), np.log(0.03))))
        concrete = rng.random() < 0.25
        grey = rng.uniform(140, 172) if concrete else rng.uniform(70, 118)
        color = _jitter(rng, (int(grey) + 2, int(grey) + 1, int(grey)), 5.0)
        roads.append(Road(np.vstack([backward[::-1], forward[1:]]), width, color))
    for _ in range(rng.integers(1, 6)):
        parent = roads[rng.integers(len(roads))]
        inside = np.flatnonzero(np.all((parent.points > 0.05) & (parent.points < 0.95), axis=1))
        if inside.size == 0 or inside[-1] < 1:
            continue
        at = int(inside[rng.integers(inside.size)].clip(1))
        direction = parent.points[at] - parent.points[at - 1]
        heading = np.arctan2(direction[1], direction[0])
        heading += rng.choice([-1, 1]) * rng.uniform(np.radians(50), np.radians(130))
        points = _walk(rng, parent.points[at], heading, rng.uniform(0.15, 1.2))
        width = float(np.exp(rng.uniform(np.log(0.004), np.log(min(parent.width, 0.016)))))
        dirt = rng.random() < 0.3
        color = _jitter(rng, (150, 136, 108) if dirt else parent.color, 4.0)
        roads.append(Road(points, width, color))
    return roads


def _fields(rng: np.random.Generator) -> tuple[list[_Parcel], list]:
    """A rotated patchwork of parcels with thin gaps between them, and some straight tracks."""
    angle = rng.uniform(0, np.pi / 2)
    frame = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    margin = rng.uniform(0.0015, 0.004)
    parcels: list[_Parcel] = []
    tracks: list = []
    v = -0.75
    while v < 0.75:
        depth = rng.uniform(0.08, 0.28)
        u = -0.75 + rng.uniform(0, 0.2)
        while u < 0.75:
            length = rng.uniform(0.1, 0.45)
            corners = np.array(
                [
                    [u + margin, v + margin],
                    [u + length - margin, v + margin],
                    [u + length - margin, v + depth - margin],
                    [u + margin, v + depth - margin],
                ]
            )
            if rng.random() < 0.8:  # the rest stays meadow
                striped = rng.random() < 0.6
                parcels.append(
                    _Parcel(
                        corners @ frame.T + 0.5,
                        _jitter(rng, _CROPS[rng.integers(len(_CROPS))], 6.0),
                        float(rng.uniform(35, 110)) if striped else 0.0,
                        angle + rng.choice([0.0, np.pi / 2]),
                    )
                )
            if rng.random() < 0.12:
                ends = np.array([[u, v - 0.4], [u, v + 0.6]]) @ frame.T + 0.5
                tracks.append((ends, float(rng.uniform(0.002, 0.006)), _jitter(rng, _TRACK, 8.0)))
            u += length
        v += depth
    return parcels, tracks


def _settlements(rng: np.random.Generator, roads: list[Road]) -> list[_Patch]:
    """Yards and buildings lining stretches of road: grey shapes right beside grey roads."""
    patches: list[_Patch] = []
    shadow = rng.uniform(0.002, 0.005, 2)
    for _ in range(rng.integers(1, 4)):
        road = roads[rng.integers(len(roads))]
        start = rng.integers(len(road.points) - 1)
        stop = min(start + rng.integers(10, 60), len(road.points) - 1)
        for k in range(start, stop, int(rng.integers(4, 9))):
            heading = np.arctan2(*(road.points[k + 1] - road.points[k])[::-1])
            side = rng.choice([-1.0, 1.0])
            length, depth = rng.uniform(0.012, 0.04), rng.uniform(0.01, 0.028)
            offset = road.width / 2 + rng.uniform(0.004, 0.02) + depth / 2
            normal = np.array([-np.sin(heading), np.cos(heading)])
            center = road.points[k] + side * offset * normal
            roof = _rotated_rect(center, heading, length, depth)
            if rng.random() < 0.15:  # a paved yard or car park instead of a house
                grey = int(rng.uniform(95, 165))
                patches.append(_Patch(roof, _jitter(rng, (grey, grey, grey + 2), 3.0)))
                continue
            patches.append(_Patch(roof + shadow, _SHADOW))
            patches.append(_Patch(roof, _jitter(rng, _ROOFS[rng.integers(len(_ROOFS))], 6.0)))
    for _ in range(rng.integers(0, 3)):  # farmyards away from roads
        center = rng.uniform(0.05, 0.95, 2)
        size = rng.uniform(0.04, 0.1, 2)
        grey = int(rng.uniform(100, 160))
        corners = _rotated_rect(center, rng.uniform(0, np.pi), *size)
        patches.append(_Patch(corners, _jitter(rng, (grey, grey - 2, grey - 6), 4.0)))
    return patches


def _trees(rng: np.random.Generator) -> np.ndarray:
    clusters = [rng.uniform(0, 1, (rng.integers(5, 30), 2))]  # scattered single trees
    for _ in range(rng.integers(0, 4)):  # woods
        center, spread = rng.uniform(0, 1, 2), rng.uniform(0.02, 0.09)
        clusters.append(center + rng.normal(0, spread, (rng.integers(20, 90), 2)))
    centers = np.vstack(clusters)
    radii = rng.uniform(0.005, 0.016, len(centers))
    shades = rng.uniform(0.75, 1.25, len(centers))
    return np.column_stack([centers, radii, shades])


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Brightness, tint and grain fields, each a sum of octaves of value noise."""
    fields = []
    for octaves in ((4, 8, 16, 32), (3, 6, 12), (_TEXTURE_GRID,), (2, 4, 8)):
        total = np.zeros((_TEXTURE_GRID, _TEXTURE_GRID), np.float32)
        for weight, cells in enumerate(octaves):
            noise = Image.fromarray(rng.normal(size=(cells, cells)).astype(np.float32))
            resized = noise.resize((_TEXTURE_GRID, _TEXTURE_GRID), Image.Resampling.BICUBIC)
            total += np.asarray(resized) * 0.65**weight
        fields.append(total / total.std())
    return np.stack(fields)


def make_scene(index: int, *, seed: int = 0) -> Scene:
    """The geometry of scene `index` of data set `seed`; identical on every machine."""
    rng = np.random.default_rng([seed, index])
    roads = _roads(rng)
    parcels, tracks = _fields(rng)
    return Scene(
        roads=tuple(roads),
        ground=_jitter(rng, _GROUND[rng.integers(len(_GROUND))], 5.0),
        parcels=tuple(parcels),
        tracks=tuple(tracks),
        patches=tuple(_settlements(rng, roads)),
        trees=_trees(rng),
        saturation=float(rng.uniform(0.4, 1.0)),
        texture=_texture(rng),
    )


def _slab(coef: np.ndarray, const: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float):
    """The x-interval where lo <= coef * x + const <= hi as (left, right); empty if left > right."""
    flat = np.abs(coef) < 1e-12
    safe = np.where(flat, 1.0, coef)
    x1, x2 = (lo - const) / safe, (hi - const) / safe
    inside = (const >= lo) & (const <= hi)
    left = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(x1, x2))
    right = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(x1, x2))
    return left, right


def _rasterize(roads: tuple[Road, ...], n: int, *, colored: bool) -> np.ndarray:
    """Exact coverage of the roads on an n×n grid of pixel centres.

    Returns (1, n, n): how many road capsules cover each pixel; with `colored`, (4, n, n):
    that count followed by the sum of the covering capsules' R, G and B. Each
    segment's capsule (points within half the width) meets a pixel row in one interval,
    computed in closed form; intervals are accumulated as +1/-1 steps and summed along
    rows, so the cost grows with the number of rows crossed, not the area covered.
    """
    a = np.vstack([road.points[:-1] for road in roads])
    b = np.vstack([road.points[1:] for road in roads])
    per_road = [len(road.points) - 1 for road in roads]
    r = np.repeat([road.width / 2 for road in roads], per_road)
    color = np.repeat(np.array([road.color for road in roads], np.float64), per_road, axis=0)

    low = np.ceil((np.minimum(a[:, 1], b[:, 1]) - r) * n - 0.5).clip(0, n).astype(np.int64)
    high = np.floor((np.maximum(a[:, 1], b[:, 1]) + r) * n - 0.5).clip(-1, n - 1).astype(np.int64)
    rows = (high - low + 1).clip(0)
    seg = np.repeat(np.arange(len(a)), rows)
    row = np.arange(seg.size) - np.repeat(np.cumsum(rows) - rows, rows) + low[seg]
    y = (row + 0.5) / n
    ax, ay, bx, by, rs = a[seg, 0], a[seg, 1], b[seg, 0], b[seg, 1], r[seg]

    lefts, rights = [], []
    for cx, cy in ((ax, ay), (bx, by)):  # the two end discs
        half = np.sqrt(np.maximum(rs**2 - (y - cy) ** 2, 0.0))
        hit = np.abs(y - cy) <= rs
        lefts.append(np.where(hit, cx - half, np.inf))
        rights.append(np.where(hit, cx + half, -np.inf))
    length = np.maximum(np.hypot(bx - ax, by - ay), 1e-12)
    ux, uy = (bx - ax) / length, (by - ay) / length
    along = _slab(ux, -ax * ux + (y - ay) * uy, 0.0, length)
    across = _slab(-uy, ax * uy + (y - ay) * ux, -rs, rs)
    lefts.append(np.maximum(along[0], across[0]))
    rights.append(
        np.where(
            lefts[-1] <= np.minimum(along[1], across[1]), np.minimum(along[1], across[1]), -np.inf
        )
    )
    left, right = np.min(lefts, axis=0), np.max(rights, axis=0)

    first = np.ceil(np.clip(left * n - 0.5, -1, n)).astype(np.int64).clip(0)
    last = np.floor(np.clip(right * n - 0.5, -1, n)).astype(np.int64).clip(max=n - 1)
    keep = first <= last
    # Each interval is a +w step at its first pixel and a -w step just past its last.
    flat = row[keep] * (n + 1)
    where = np.concatenate([flat + first[keep], flat + last[keep] + 1])
    sign = np.repeat([1.0, -1.0], keep.sum())
    weights = [sign]
    if colored:
        weights += [sign * np.tile(color[seg[keep], c], 2) for c in range(3)]
    cover = np.empty((len(weights), n, n + 1), np.float32)
    for plane, w in zip(cover, weights, strict=True):
        plane.reshape(-1)[:] = np.bincount(where, w, n * (n + 1))
    np.cumsum(cover, axis=2, out=cover)
    return cover[:, :, :n]


def _pixels(points: np.ndarray, n: int) -> list[float]:
    """Unit coordinates as PIL's flat x, y list; PIL puts pixel centres on integers."""
    return (points * n - 0.5).ravel().tolist()


def _ground_image(scene: Scene, n: int) -> np.ndarray:
    """Everything under the roads, at n×n, as float RGB."""
    image = Image.new("RGB", (n, n), scene.ground)
    labels = Image.new("L", (n, n), 0)  # which parcel is on top, for plough lines
    draw, label = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for k, parcel in enumerate(scene.parcels, start=1):
        draw.polygon(_pixels(parcel.corners, n), fill=parcel.color)
        label.polygon(_pixels(parcel.corners, n), fill=k)
    for ends, width, color in scene.tracks:
        xy = _pixels(ends, n)
        draw.line(xy, fill=color, width=max(1, round(width * n)))
        label.line(xy, fill=0, width=max(1, round(width * n)))
    for patch in scene.patches:
        draw.polygon(_pixels(patch.corners, n), fill=patch.color)
        label.polygon(_pixels(patch.corners, n), fill=0)
    for x, y, radius, _ in scene.trees.tolist():  # shadows first, so crowns cover them
        box = [
            (x + 0.004 - radius) * n,
            (y + 0.004 - radius) * n,
            (x + 0.004 + radius) * n,
            (y + 0.004 + radius) * n,
        ]
        draw.ellipse(box, fill=_SHADOW)
        label.ellipse(box, fill=0)
    for x, y, radius, shade in scene.trees.tolist():
        box = [(x - radius) * n, (y - radius) * n, (x + radius) * n, (y + radius) * n]
        draw.ellipse(box, fill=tuple(round(c * shade) for c in _TREE))
        label.ellipse(box, fill=0)

    # Plough lines: a sinusoid across each striped parcel, looked up by the parcel on top.
    frequency = np.array([0.0] + [p.stripe_frequency for p in scene.parcels])
    angle = np.array([0.0] + [p.stripe_angle for p in scene.parcels])
    fx = (frequency * np.cos(angle)).astype(np.float32)
    fy = (frequency * np.sin(angle)).astype(np.float32)
    parcel = np.asarray(labels, np.intp)
    centres = (np.arange(n, dtype=np.float32) + 0.5) / n
    phase = fx[parcel] * centres[None, :] + fy[parcel] * centres[:, None]
    stripes = 1.0 + 0.1 * np.sin(np.float32(2 * np.pi) * phase)
    return np.asarray(image, np.float32) * stripes[..., None]


def _field(values: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(Image.fromarray(values).resize((n, n), Image.Resampling.BICUBIC))


def render(index: int, size: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scene `index` of the data set `seed`, rendered at size×size.

    Returns image uint8 (size, size, 3) and mask uint8 (size, size) with values {0, 1}
    (1 = road). The same (seed, index, size) always gives byte-identical arrays.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    scene = make_scene(index, seed=seed)
    factor = max(2, -(-_MIN_SUPERSAMPLED // size))
    fine = size * factor

    image = _ground_image(scene, fine)
    count, *color_sum = _rasterize(scene.roads, fine, colored=True)
    road_color = np.stack(color_sum, axis=-1) / np.maximum(count, 1.0)[..., None]
    image = np.where((count > 0)[..., None], road_color, image)
    # Area averaging (PIL's reduce) is what a camera does: sub-pixel roads fade, not vanish.
    coarse = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).reduce(factor)
    image = np.asarray(coarse, np.float32)

    # Lighting, soil tint and grain vary smoothly, so they are applied after averaging.
    brightness, tint, grain, haze = (_field(field, size) for field in scene.texture)
    saturation = np.clip(scene.saturation + 0.25 * haze, 0.2, 1.1)[..., None]
    image = image.mean(axis=2, keepdims=True) * (1.0 - saturation) + image * saturation
    image *= (1.0 + 0.1 * brightness + 0.06 * grain)[..., None]
    browner = np.where(tint > 0, tint, 0.0)[..., None] * np.array([8.0, 3.0, -5.0], np.float32)
    greener = np.where(tint < 0, -tint, 0.0)[..., None] * np.array([-5.0, 2.0, -3.0], np.float32)
    noise = np.random.default_rng([seed, index, size]).standard_normal(image.shape, np.float32)
    image = np.clip(image + browner + greener + 3.0 * noise, 0, 255).round().astype(np.uint8)

    mask = (_rasterize(scene.roads, size, colored=False)[0] > 0).astype(np.uint8)
    return image, mask
