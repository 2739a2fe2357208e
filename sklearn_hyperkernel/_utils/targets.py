"""Regression targets: their standardisation, their ridges and the weights of their rows.

* :func:`target_scaling` -- the standardisation of ``normalize_y``, defined
  once: :class:`~sklearn_hyperkernel.HyperKernelRegressor` and
  :class:`~sklearn_hyperkernel.HypernetworkRegressor` both fit
  ``(y - mean) / scale`` and predict ``output * scale + mean``, as
  :class:`~sklearn.gaussian_process.GaussianProcessRegressor` does;
* :func:`alpha_per_target` and :func:`check_sample_weight` -- the checks of
  kernel ridge regression's ``alpha`` (one ridge per target column) and
  ``sample_weight`` (one weight per row of the targets).
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from sklearn.utils import check_array

__all__ = ["alpha_per_target", "check_sample_weight", "target_scaling"]


def target_scaling(
    targets: np.ndarray, sample_weight: np.ndarray | None = None, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale per target column, for ``(targets - mean) / scale``.

    The mean and the standard deviation are weighted by ``sample_weight``
    (``np.average``), so that an integer weight is the same as repeating the
    row. A column that is constant up to rounding -- a standard deviation of
    below ``10 * eps * max(|mean|, 1)`` -- keeps a scale of 1 (dividing by
    its rounding noise would only amplify it).

    Parameters
    ----------
    targets : ndarray of shape (n_samples, n_targets)
    sample_weight : ndarray of shape (n_samples,) or None, default=None
        Non-negative weights, not all zero.
    normalize : bool, default=True
        False gives a mean of 0 and a scale of 1 (the targets as they are).

    Returns
    -------
    mean : ndarray of shape (n_targets,)
    scale : ndarray of shape (n_targets,)
        Positive. With ``normalize=False`` or no rows: zeros and ones.
    """
    n_targets = targets.shape[1]
    if not normalize or targets.shape[0] == 0:
        return np.zeros(n_targets), np.ones(n_targets)
    mean = np.average(targets, axis=0, weights=sample_weight)
    scale = np.sqrt(np.average((targets - mean) ** 2, axis=0, weights=sample_weight))
    constant = scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    scale[constant] = 1.0
    return mean, scale


def alpha_per_target(alpha: Any, n_targets: int) -> np.ndarray:
    """One positive ridge per target: ``alpha`` broadcast to shape (n_targets,).

    Raises
    ------
    ValueError
        When ``alpha`` is not 0-d or 1-d, has neither 1 nor ``n_targets``
        values, or holds a value that is not positive and finite.
    """
    values = np.asarray(alpha, dtype=np.float64)
    if values.ndim > 1:
        raise ValueError(
            f"alpha must be a float or a 1-d array-like, got an array of shape {values.shape}."
        )
    values = np.atleast_1d(values)
    if values.shape[0] not in (1, n_targets):
        raise ValueError(
            f"alpha has {values.shape[0]} values but y has {n_targets} "
            "target(s); give one value or one per target."
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"alpha must be positive and finite, got {alpha!r}.")
    return np.broadcast_to(values, (n_targets,)).copy()


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    """The weights as a float64 array of shape (n_samples,), or None for None.

    A scalar weighs every row alike. The messages are scikit-learn's where it
    has one.

    Raises
    ------
    ValueError
        When the weights are not 1-d of ``n_samples`` values, not finite,
        negative, or all zero.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, Real):
        weights = np.full(n_samples, float(sample_weight))
    else:
        weights = check_array(
            sample_weight,
            ensure_2d=False,
            dtype=np.float64,
            input_name="sample_weight",
            ensure_min_samples=0,
        )
        if weights.ndim != 1:
            raise ValueError(
                f"sample_weight must be 1D array or scalar, got an array of shape {weights.shape}."
            )
        if weights.shape[0] != n_samples:
            raise ValueError(f"sample_weight.shape == {weights.shape}, expected ({n_samples},)!")
    if not np.all(np.isfinite(weights)):
        raise ValueError("sample_weight must be finite.")
    if np.any(weights < 0):
        raise ValueError("sample_weight must be non-negative.")
    if n_samples > 0 and not np.any(weights > 0):
        raise ValueError(
            "Sample weights must contain at least one non-zero number; all weights are zero."
        )
    return weights
