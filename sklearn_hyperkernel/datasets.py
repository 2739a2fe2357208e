"""Turn images into the paper's pixel-regression rows ``u = [x | z]``.

Nothing here downloads anything: pass any stack of images (for example
``sklearn.datasets.load_digits().images``).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["pixel_regression"]


def pixel_regression(
    images,
    *,
    task: str = "representation",
    pixels_per_image: int | None = None,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[x | z]`` and targets of the paper's pixel-regression tasks.

    Each image contributes rows whose x is the (unit-norm) image and whose z
    is a pixel coordinate scaled to ``[-1, 1]``; the target is that pixel's
    value scaled to ``[0, 1]``.

    Parameters
    ----------
    images : array-like of shape (n_images, height, width)
        Grey-level images with non-negative values.
    task : {"representation", "inpainting"}, default="representation"
        ``"representation"``: x is the whole image. ``"inpainting"``: x is the
        top half of the image only (the rows f may see); targets still cover
        every pixel.
    pixels_per_image : int, default=None
        Number of random pixel coordinates drawn (without replacement) per
        image; None takes every pixel, in row-major order.
    random_state : int, RandomState instance or None, default=None
        Draws the pixel coordinates.

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
    n_images, height, width = images.shape
    n_pixels = height * width
    if pixels_per_image is not None and not 1 <= pixels_per_image <= n_pixels:
        raise ValueError(f"pixels_per_image must be in [1, {n_pixels}]; got {pixels_per_image}.")
    scale = images.max() or 1.0
    seen = images if task == "representation" else images[:, : height // 2, :]
    x = seen.reshape(n_images, -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    rows, cols = np.divmod(np.arange(n_pixels), width)
    coordinates = np.column_stack([2.0 * rows / max(height - 1, 1) - 1.0, 2.0 * cols / max(width - 1, 1) - 1.0])
    if pixels_per_image is None:
        pixel_index = np.tile(np.arange(n_pixels), (n_images, 1))
    else:
        rng = check_random_state(random_state)
        pixel_index = np.stack([rng.choice(n_pixels, pixels_per_image, replace=False) for _ in range(n_images)])
    image_index = np.repeat(np.arange(n_images), pixel_index.shape[1])
    pixel_index = pixel_index.ravel()
    U = np.hstack([x[image_index], coordinates[pixel_index]])
    y = images.reshape(n_images, -1)[image_index, pixel_index] / scale
    return U, y
