"""Exact row identity (:mod:`sklearn_hyperkernel._utils.rows`) on numpy arrays and torch tensors.

``distinct_rows`` is the package's one de-duplication of rows: the Gram engine factorises
x with it and the finite network finds its distinct x with it. Its results are checked
against the definition (rows equal when all their values are, ``-0.0 == 0.0``), in order of
first appearance, on numpy and on torch (whose results stay torch, on the input's device),
with and without hash collisions. The kernels' coincident rows are tested in
``test_coincident_inputs.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from sklearn_hyperkernel._utils import rows as _rows


def _rows_with_repeats() -> np.ndarray:
    rng = np.random.default_rng(3)
    distinct = rng.integers(-2, 3, size=(6, 4)).astype(float)  # round numbers, zeros
    distinct[5] = -distinct[4]
    index = np.array([2, 0, 2, 5, 1, 4, 0, 3, 3, 5, 2])
    rows = distinct[index].copy()
    rows[rows == 0.0] = -0.0  # the same rows, written with negative zeros
    rows[::2][rows[::2] == 0.0] = 0.0
    return rows


def _first_appearance(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, by comparing every pair of rows."""
    equal = (rows[:, None, :] == rows[None, :, :]).all(axis=-1)
    first = equal.argmax(axis=1)  # each row's first equal row
    leaders = np.unique(first)
    return rows[leaders], np.searchsorted(leaders, first)


def _constant_keys(rows):
    return np.zeros(np.shape(rows)[0], dtype=np.uint64)


@pytest.mark.parametrize("collide", [False, True])
def test_distinct_rows_follow_the_definition_on_numpy(monkeypatch, collide):
    rows = _rows_with_repeats()
    if collide:  # every row hashes alike: the groups are split by comparing values
        monkeypatch.setattr(_rows, "row_keys", _constant_keys)
    distinct, inverse = _rows.distinct_rows(rows)
    expected, expected_inverse = _first_appearance(rows)
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(inverse, expected_inverse)
    np.testing.assert_array_equal(distinct[inverse], rows)


@pytest.mark.parametrize("collide", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distinct_rows_of_a_torch_tensor_stay_torch(torch_module, monkeypatch, collide, dtype):
    torch = torch_module
    rows = _rows_with_repeats()
    tensor = torch.as_tensor(rows, dtype=getattr(torch, dtype))
    if collide:
        monkeypatch.setattr(_rows, "row_keys", _constant_keys)
    distinct, inverse = _rows.distinct_rows(tensor)
    assert isinstance(distinct, torch.Tensor) and distinct.dtype == tensor.dtype
    assert inverse.dtype == torch.int64 and distinct.device == inverse.device == tensor.device
    expected, expected_inverse = _first_appearance(rows)
    np.testing.assert_array_equal(distinct.numpy(), expected)
    np.testing.assert_array_equal(inverse.numpy(), expected_inverse)
    assert torch.equal(distinct[inverse], tensor)
    empty, empty_inverse = _rows.distinct_rows(tensor[:0])
    assert tuple(empty.shape) == (0, 4) and tuple(empty_inverse.shape) == (0,)
    with pytest.raises(ValueError, match="2-dimensional"):
        _rows.distinct_rows(tensor[0])
