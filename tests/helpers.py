"""Plain builders several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridrun.spec import GridError, load_grid


def load_error(path: Path, content: str | bytes) -> str:
    """The one line `load_grid` refuses a grid file holding `content` with, after the
    file's path (which every such message starts with)."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(GridError) as info:
        load_grid(path)
    prefix = f"{path}: "
    assert str(info.value).startswith(prefix), str(info.value)
    return str(info.value).removeprefix(prefix)


def binary_baselines(
    eval_size: int,
    images: int,
    class_pixels: tuple[int, int],
    background: dict[str, float],
    foreground: dict[str, float],
) -> dict:
    """baselines.json of a binary validation set without ignored pixels: its size, class
    pixels and what the all-background and all-foreground predictors score."""
    split = {"images": images, "class_pixels": list(class_pixels), "ignored_pixels": 0}
    return {
        "eval_size": eval_size,
        "num_labels": 2,
        "splits": {"val": split},
        "predictors": {"all background": background, "all foreground": foreground},
    }
