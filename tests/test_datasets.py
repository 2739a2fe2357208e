import numpy as np
import pytest
from sklearn.datasets import load_digits

from sklearn_hyperkernel.datasets import pixel_regression


def test_rows_hold_unit_image_and_scaled_coordinate():
    images = load_digits().images[:3]
    U, y = pixel_regression(images)
    assert U.shape == (3 * 64, 64 + 2) and y.shape == (3 * 64,)
    np.testing.assert_allclose(np.linalg.norm(U[:, :64], axis=1), 1.0)
    # row-major order: row 9 of image 0 is pixel (1, 1)
    np.testing.assert_allclose(U[9, 64:], [2 / 7 - 1, 2 / 7 - 1])
    np.testing.assert_allclose(U[0, 64:], [-1.0, -1.0])
    np.testing.assert_allclose(U[63, 64:], [1.0, 1.0])
    np.testing.assert_allclose(y, images.reshape(-1) / images.max())


def test_inpainting_x_is_the_top_half_and_targets_cover_the_image():
    images = load_digits().images[:2]
    U, y = pixel_regression(images, task="inpainting")
    top = images[0, :4].ravel()
    np.testing.assert_allclose(U[0, :32], top / np.linalg.norm(top))
    assert U.shape == (128, 34)
    np.testing.assert_allclose(y, images.reshape(-1) / images.max())


def test_random_pixels_are_distinct_per_image_and_reproducible():
    images = load_digits().images[:4]
    U, y = pixel_regression(images, pixels_per_image=20, random_state=0)
    U2, y2 = pixel_regression(images, pixels_per_image=20, random_state=0)
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_array_equal(y, y2)
    for i in range(4):
        coords = U[20 * i : 20 * (i + 1), -2:]
        assert np.unique(coords, axis=0).shape[0] == 20
        # each target is the image's value at that coordinate
        r = np.rint((coords[:, 0] + 1) * 3.5).astype(int)
        c = np.rint((coords[:, 1] + 1) * 3.5).astype(int)
        np.testing.assert_allclose(y[20 * i : 20 * (i + 1)], images[i, r, c] / images.max())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "denoise"}, "task"),
        ({"pixels_per_image": 0}, "pixels_per_image"),
        ({"pixels_per_image": 65}, "pixels_per_image"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pixel_regression(load_digits().images[:2], **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="images"):
        pixel_regression(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="non-negative"):
        pixel_regression(-np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="finite"):
        pixel_regression(np.full((1, 2, 2), np.nan))
