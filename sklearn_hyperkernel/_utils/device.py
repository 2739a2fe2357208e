"""The package's one device rule: what ``device=`` means, for kernels and networks alike.

Every class with a ``device`` parameter resolves it here:

* ``None``: the CPU with the class's CPU default (numpy for the kernels, the
  fastest path there; torch on the CPU for the finite networks);
* ``"auto"``: a CUDA GPU when torch sees one, else exactly what ``None`` means;
* ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or a ``torch.device``: that torch
  device, which must exist on this machine.

An unusable value raises a ``ValueError`` that names the parameter (an
``ImportError`` when torch itself is missing). A fitted
object loaded on a machine without the device it was saved with falls back to
the CPU with a :class:`DeviceFallbackWarning` (as skorch does), see
:func:`fallback_device`.

:class:`Placement` (with :func:`resolve_placement`) is the rule resolved for
the kernels' recursions: numpy, or torch tensors on a device, in float64 or
float32.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DeviceFallbackWarning",
    "Placement",
    "device_available",
    "fallback_device",
    "resolve_device",
    "resolve_placement",
]


_ACCEPTED = "None (the CPU), 'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device"


class DeviceFallbackWarning(UserWarning):
    """A loaded model's device is missing on this machine: it runs on the CPU instead."""


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def resolve_device(device: Any, name: str = "device") -> str | None:
    """Check a ``device`` parameter and resolve ``"auto"``.

    Parameters
    ----------
    device : None, "auto", str or torch.device
    name : str, default="device"
        The parameter's name, for error messages.

    Returns
    -------
    str or None
        None for the CPU default, else a canonical torch device string
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Raises
    ------
    ValueError
        If ``device`` is not a device, or the GPU asked for does not exist
        here.
    ImportError
        If ``device`` names a torch device and torch is not installed.
    """
    if device is None:
        return None
    torch = _torch()
    if torch is not None and isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"{name}={device!r} is not supported; use {_ACCEPTED}.")
    if device == "auto":
        if torch is not None and torch.cuda.is_available():
            return "cuda"
        return None
    if torch is None:
        raise ImportError(
            f"{name}={device!r} needs torch, which is not installed; install it with "
            "`pip install sklearn-hyperkernel[torch]` or use device=None."
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}={device!r} is not supported; use {_ACCEPTED}.")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name}={device!r} but torch finds no CUDA GPU on this machine; use {name}=None "
            "(the CPU) or 'auto' (a GPU when there is one)."
        )
    if (
        parsed.type == "cuda"
        and parsed.index is not None
        and parsed.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"{name}={device!r} but torch finds {torch.cuda.device_count()} CUDA GPU(s) on "
            "this machine."
        )
    return str(parsed)


def device_available(device: Any) -> bool:
    """Whether :func:`resolve_device` accepts ``device`` on this machine."""
    try:
        resolve_device(device)
    except (ValueError, ImportError):
        return False
    return True


def fallback_device(device: Any, owner: str) -> Any:
    """``device`` when this machine has it, else None (the CPU) with a warning.

    Called when a pickled object is loaded: a model saved on a GPU machine
    must load and predict on one without that GPU.

    Parameters
    ----------
    device : None, str or torch.device
        The device the object was saved with.
    owner : str
        Names the object in the warning.
    """
    if device is None or device_available(device):
        return device
    warnings.warn(
        f"{owner} was saved with device={str(device)!r}, which this machine does not have; "
        "it is loaded on the CPU instead. Use set_params(device=...) to choose another device.",
        DeviceFallbackWarning,
        stacklevel=3,
    )
    return None


@dataclass(frozen=True)
class Placement:
    """Which arrays the kernels' recursions run on: numpy, or torch on a device.

    Only strings are stored, so a placement travels to other processes (Dask
    workers) and is resolved there.

    Attributes
    ----------
    device : str or None
        None for numpy; otherwise a torch device such as ``"cpu"``, ``"cuda"``
        or ``"cuda:1"``.
    dtype : {"float64", "float32"}
    """

    device: str | None = None
    dtype: str = "float64"

    @property
    def uses_torch(self) -> bool:
        """Whether the arrays are torch tensors."""
        return self.device is not None

    @property
    def on_gpu(self) -> bool:
        """Whether the arrays are on a GPU."""
        return self.device is not None and not self.device.startswith("cpu")

    def put(self, array: np.ndarray) -> Any:
        """A host array as an array of this placement (no copy when possible)."""
        if not self.uses_torch:
            return np.asarray(array, dtype=self.dtype)
        import torch

        return torch.as_tensor(
            np.asarray(array), dtype=getattr(torch, self.dtype), device=self.device
        )

    def put_index(self, index: np.ndarray | slice | None) -> Any:
        """An integer index (or boolean mask) for arrays of this placement.

        None and slices pass through; so does everything on numpy.
        """
        if index is None or isinstance(index, slice) or not self.uses_torch:
            return index
        import torch

        if index.dtype == np.bool_:
            return torch.as_tensor(index, device=self.device)
        return torch.as_tensor(index, dtype=torch.int64, device=self.device)

    @staticmethod
    def host(array: Any) -> np.ndarray:
        """A float64 numpy copy (or view) of a result."""
        if isinstance(array, np.ndarray):
            return array if array.dtype == np.float64 else array.astype(np.float64)
        return array.detach().cpu().double().numpy()


def resolve_placement(device: Any, dtype: str = "float64") -> Placement:
    """Check a ``device`` / ``dtype`` pair; the device rule is :func:`resolve_device`.

    ``None`` (and ``"auto"`` without a GPU) is numpy; any torch device runs
    the same recursions with torch there.

    Raises
    ------
    ValueError
        For a ``dtype`` other than ``"float64"`` and ``"float32"``, and as
        :func:`resolve_device`.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32'; got {dtype!r}.")
    return Placement(resolve_device(device), dtype)
