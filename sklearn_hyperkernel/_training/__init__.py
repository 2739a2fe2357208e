"""Private layer of sklearn_hyperkernel (docs/architecture.md).

Until 0.1.0 this name was a module; its names are re-exported here so that a
pickle of 0.1.0 that refers to them (``sklearn_hyperkernel._training.<name>``) loads.
"""

from .loop import (
    Plateau,
    TrainingRows,
    batch_reporter,
    check_divergence,
    epoch_progress,
    import_torch,
    optimizer_for,
    run_epoch,
    split_validation,
    tensors_to_cpu,
    torch_threads,
    warn_if_not_learned,
)

__all__ = [
    "Plateau",
    "TrainingRows",
    "batch_reporter",
    "check_divergence",
    "epoch_progress",
    "import_torch",
    "optimizer_for",
    "run_epoch",
    "split_validation",
    "tensors_to_cpu",
    "torch_threads",
    "warn_if_not_learned",
]
