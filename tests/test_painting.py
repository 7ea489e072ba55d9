"""The one overlay painter of TensorBoard and the report: exact pixels."""

import numpy as np
import pytest

from gridrun.painting import COLORS, OPACITY, paint_overlay

# grey 100 blended with OPACITY 0.55 of each colour: 0.45·100 + 0.55·c, rounded
TP, FP, FN, PLAIN = (45, 155, 45), (185, 45, 45), (45, 106, 185), (100, 100, 100)
IMAGE = np.full((3, 3, 3), 100, dtype=np.uint8)
TRUTH = np.array([[1, 1, 0], [0, 255, 2], [2, 0, 0]], dtype=np.uint8)
PRED = np.array([[1, 0, 1], [0, 1, 2], [1, 0, 2]], dtype=np.uint8)


def test_colours_are_the_documented_ones():
    assert (COLORS, OPACITY) == (
        {"TP": (0, 200, 0), "FP": (255, 0, 0), "FN": (0, 110, 255)}, 0.55)  # fmt: skip


def test_tp_fp_fn_painted_and_an_ignored_pixel_is_neither_class():
    expected = np.array([
        [TP, FN, FP],
        [PLAIN, PLAIN, TP],  # (1, 1): truth 255 is ignored, though predicted foreground
        [FP, PLAIN, FP],  # (2, 0): class 1 where the truth is class 2 is a false positive
    ], dtype=np.uint8)  # fmt: skip
    np.testing.assert_array_equal(paint_overlay(IMAGE, TRUTH, PRED, 255), expected)


def test_without_an_ignore_index_every_value_is_a_label():
    out, ignoring = paint_overlay(IMAGE, TRUTH, PRED, None), paint_overlay(IMAGE, TRUTH, PRED, 255)
    np.testing.assert_array_equal(out[1, 1], FP)  # predicted 1 where the truth is class 255
    others = TRUTH != 255
    np.testing.assert_array_equal(out[others], ignoring[others])


def test_grey_images_are_painted_like_rgb_and_shapes_must_agree():
    grey = IMAGE[..., 0]
    np.testing.assert_array_equal(
        paint_overlay(grey, TRUTH, PRED, 255), paint_overlay(IMAGE, TRUTH, PRED, 255)
    )
    np.testing.assert_array_equal(
        paint_overlay(grey[..., None], TRUTH, PRED, 255), paint_overlay(IMAGE, TRUTH, PRED, 255)
    )
    with pytest.raises(ValueError, match="differ"):
        paint_overlay(IMAGE, TRUTH[:1], PRED, 255)
