"""The pieces of the finite networks' training loop, each small and on its own.

The estimators' loop (``BaseHypernetwork._fit_loop`` of
:mod:`sklearn_hyperkernel._network_estimator`) composes them:

* :class:`TrainingRows` holds the training rows as tensors, with the
  distinct x rows when many rows share one (pixel tasks);
* :func:`run_epoch` is one pass of shuffled mini-batches; the progress (a bar
  on a terminal, else a line per epoch) is :func:`epoch_progress` and
  :func:`batch_reporter`;
* the stopping rules: :class:`Plateau` watches one number per epoch, the
  training loss (stop when it has not fallen by ``tol`` for
  ``n_iter_no_change`` epochs) or, with ``early_stopping``, the validation
  score (the same rule, rising, keeping and restoring the best weights);
  ``max_epochs`` bounds the loop; :func:`check_divergence` stops a run that
  blew up;
* :func:`warn_if_not_learned` says when a run stopped without having learned;
* :func:`optimizer_for` builds (or keeps) the optimizer, :func:`split_validation`
  holds out the validation rows, :func:`torch_threads` sets torch's CPU threads.

Progress and timing go through :mod:`sklearn_hyperkernel.progress`. torch is
imported only when a function needs it (:func:`import_torch`, which says how to
install it when it is missing), so that the package imports without it.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import effective_n_jobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from ..config import get_config
from ..progress import ProgressLog, format_log_line

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

INSTALL_HINT = "pip install sklearn-hyperkernel[torch]"
#: A training loss this many times the first epoch's (or the constant
#: predictor's) means the run diverged.
DIVERGENCE_FACTOR = 1e8


def import_torch():
    """Return the ``torch`` module, or raise an ImportError that says how to get it."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised with a blocked import
        raise ImportError(
            "The finite hypernetwork (sklearn_hyperkernel.network and the Hypernetwork "
            "estimators) needs PyTorch, an optional dependency of sklearn-hyperkernel; "
            f"install it with `{INSTALL_HINT}`."
        ) from error
    return torch


@contextlib.contextmanager
def torch_threads(n_jobs: int | None):
    """Run the body with ``n_jobs`` torch CPU threads (joblib's rule), then restore them."""
    torch = import_torch()
    previous = torch.get_num_threads()
    wanted = max(1, int(effective_n_jobs(n_jobs)))
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if wanted != previous:
            torch.set_num_threads(previous)


# ----------------------------------------------------------------- rows
@dataclass
class TrainingRows:
    """Training rows as tensors: x, z, the targets, and the distinct x rows if worth it.

    ``x_unique[x_index]`` equals ``x`` when at most the configuration's
    ``deduplicate_below`` fraction of the rows have distinct x (then a batch
    runs ``f`` once per distinct x of the batch); both are None otherwise.
    """

    x: Any
    z: Any
    target: Any
    x_unique: Any = None
    x_index: Any = None

    @classmethod
    def build(cls, x, z, target) -> TrainingRows:
        """Rows from tensors, with the distinct x found by the package's row de-duplication."""
        from .._utils.rows import distinct_rows

        x_unique, x_index = distinct_rows(x)
        if x_unique.shape[0] > get_config()["deduplicate_below"] * x.shape[0]:
            return cls(x, z, target)
        return cls(x, z, target, x_unique, x_index)

    @property
    def n_rows(self) -> int:
        """Number of training rows."""
        return int(self.x.shape[0])

    def forward(self, module, rows):
        """``module``'s output for the rows at indices ``rows`` (a tensor)."""
        if self.x_index is None:
            return module(self.x[rows], self.z[rows])
        torch = import_torch()
        distinct, inverse = torch.unique(self.x_index[rows], return_inverse=True)
        return module(self.x_unique[distinct], self.z[rows], x_index=inverse)


def run_epoch(
    module,
    rows: TrainingRows,
    loss_fn: Callable,
    optimizer,
    order,
    batch_size: int,
    report: Callable[[int, int, float], None] | None = None,
) -> float:
    """One pass over ``rows`` in the mini-batches of ``order``; returns the mean loss.

    Parameters
    ----------
    module : torch.nn.Module
        The network, in training mode.
    rows : TrainingRows
        The training rows.
    loss_fn : callable
        ``loss_fn(output, target)``, the mean loss of a batch.
    optimizer : torch.optim.Optimizer
        Steps once per batch.
    order : torch.Tensor of shape (n_rows,)
        The permutation of the rows for this epoch (on their device).
    batch_size : int
        Rows per batch (the last batch may be smaller).
    report : callable, default=None
        ``report(batch_number, n_batches, running_loss)``, called
        ``running_loss_reports`` times per epoch when given
        (:mod:`sklearn_hyperkernel.config`).

    Returns
    -------
    loss : float
        Mean of the batch losses weighted by their numbers of rows.
    """
    torch = import_torch()
    n_rows = rows.n_rows
    batch_size = min(batch_size, n_rows)
    running = torch.zeros((), dtype=rows.z.dtype, device=rows.z.device)
    n_batches = (n_rows + batch_size - 1) // batch_size
    reports = get_config()["running_loss_reports"]
    report_every = max(1, n_batches // reports) if report is not None else 0
    for batch_number, start in enumerate(range(0, n_rows, batch_size)):
        batch = order[start : start + batch_size]
        loss = loss_fn(rows.forward(module, batch), rows.target[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.detach() * batch.shape[0]
        if report_every and (batch_number + 1) % report_every == 0:
            seen = min(start + batch_size, n_rows)
            report(batch_number + 1, n_batches, running.item() / seen)
    return running.item() / n_rows


def epoch_progress(source: str, epochs: int, verbose: int) -> ProgressLog:
    """The progress of a fit: a bar over the epochs on a terminal, else the epochs' own lines.

    ``epochs`` is ``max_epochs``, a cap that the stopping rule usually ends
    before: the bar says "up to", and closes where the fit stops.
    """
    return ProgressLog(
        f"[{source}] fit, up to",
        epochs,
        verbose,
        unit="epochs",
        min_interval=0.0,
        count_lines=False,
    )


def batch_reporter(progress: ProgressLog, source: str, verbose: int):
    """The running-loss ``report`` of :func:`run_epoch` at ``verbose >= 2``, else None."""
    if verbose < 2:
        return None

    def report(batch_number: int, n_batches: int, running_loss: float) -> None:
        progress.step(
            0,
            status=f"running loss {running_loss:.4g}",
            line=format_log_line(
                source, f"  batch {batch_number}/{n_batches}, running loss {running_loss:.6g}"
            ),
        )

    return report


# ------------------------------------------------------- stopping rules
class Plateau:
    """Stop when a watched number has not improved by ``tol`` for ``patience`` epochs.

    The training loss (``maximize=False``) or the validation score
    (``maximize=True``, with ``keep_best`` to restore the weights of its best
    epoch, as scikit-learn's MLPs and skorch's ``EarlyStopping`` do).

    Parameters
    ----------
    tol : float
        Smallest improvement that counts.
    patience : int
        Epochs without such an improvement that stop the training.
    maximize : bool, default=False
        Whether larger is better.
    keep_best : bool, default=False
        Keep a copy of the weights of the best epoch (:meth:`update` then
        needs the module) and put them back in :meth:`restore_best`.
    best : float, default=None
        Best value so far (None: none yet).
    """

    def __init__(
        self,
        tol: float,
        patience: int,
        maximize: bool = False,
        keep_best: bool = False,
        best: float | None = None,
    ) -> None:
        self.tol = tol
        self.patience = patience
        self.maximize = maximize
        self.keep_best = keep_best
        self.best = (-np.inf if maximize else np.inf) if best is None else best
        self.stale = 0
        self.best_state = None

    @property
    def watched(self) -> str:
        """What the rule watches, for messages."""
        return "validation score" if self.maximize else "training loss"

    def update(self, value: float, module=None) -> bool:
        """Record one epoch's ``value``; True when training should stop."""
        if self.maximize:
            better, improved = value > self.best, value > self.best + self.tol
        else:
            better, improved = value < self.best, value < self.best - self.tol
        if better and self.keep_best:
            self.best_state = copy.deepcopy(module.state_dict())
        self.stale = 0 if improved else self.stale + 1
        self.best = max(self.best, value) if self.maximize else min(self.best, value)
        return self.stale >= self.patience

    def restore_best(self, module) -> None:
        """Load the kept weights of the best epoch into ``module`` (if any were kept)."""
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


def check_divergence(loss: float, reference: float, epoch: int, learning_rate: float) -> None:
    """Raise when the loss is not finite or grew :data:`DIVERGENCE_FACTOR`-fold over ``reference``.

    In float64 a run that blows up can stay finite (and then die: every
    relu off, a constant output), so growth by eight orders of magnitude
    over the first epoch's loss counts as divergence too.

    Raises
    ------
    ValueError
        Naming the epoch and the ``learning_rate`` to lower.
    """
    if not np.isfinite(loss) or loss > DIVERGENCE_FACTOR * reference:
        raise ValueError(
            f"Training diverged: the loss became {loss:.4g} in epoch {epoch} "
            f"(it was {reference:.4g}). Lower learning_rate (currently "
            f"{learning_rate}) or scale the inputs and targets; the model is "
            "left in its diverged state."
        )


# ------------------------------------------------------------ warnings
def remedy(estimator) -> str:
    """What to try when a run learned nothing, leaving out what is already set."""
    options = []
    if estimator.optimizer != "adam":
        options.append("optimizer='adam'")
    if estimator.optimizer == "sgd":
        options.append("a larger learning_rate")
    else:
        options.append("another learning_rate (e.g. 3e-3 or 3e-4)")
    if estimator.parameterization != "standard":
        options.append("parameterization='standard'")
    if not estimator.normalize_x:
        options.append("normalize_x=True")
    if getattr(estimator, "normalize_y", True) is False:
        options.append("normalize_y=True")
    options.append("a larger max_epochs")
    return "try " + ", ".join(options[:-1]) + " or " + options[-1]


def warn_if_not_learned(
    estimator, constant_loss: float, epochs_run: int, converged: bool, watched: str
) -> None:
    """ConvergenceWarning for a run that stopped without having learned (or too early).

    A run "did not learn" when its final training loss is no better than
    ``constant_loss``, the best constant prediction's (the targets' variance
    for regression, the entropy of the class prior for classification), or
    when ``tol`` stopped it as early as it can, ``n_iter_no_change + 1``
    epochs in. Targets a constant fits exactly (one class, a constant column)
    never warn so: there is nothing to learn. Any other run stopped by
    ``max_epochs`` says so.
    """
    something_to_learn = constant_loss > 1e-12
    final_loss = estimator.loss_curve_[-1]
    settings = (
        f"optimizer={estimator.optimizer!r}, learning_rate={estimator.learning_rate}, "
        f"parameterization={estimator.parameterization!r}"
    )
    reached = "" if converged else f", stopped by max_epochs={estimator.max_epochs}"
    if something_to_learn and final_loss >= constant_loss:
        message = (
            f"The network did not learn: its final training loss {final_loss:.4g} is "
            f"no better than the constant predictor's {constant_loss:.4g} after "
            f"{epochs_run} epoch(s){reached} ({settings}); {remedy(estimator)}."
        )
    elif something_to_learn and converged and epochs_run <= estimator.n_iter_no_change + 1:
        message = (
            f"Training stopped after {epochs_run} epochs: the {watched} did not "
            f"improve by tol={estimator.tol} after the first epoch, so the network has "
            f"hardly learned ({settings}); {remedy(estimator)}, or a smaller tol."
        )
    elif not converged:
        message = (
            f"Stopped after max_epochs={estimator.max_epochs} epochs before the "
            f"{watched} stopped improving; raise max_epochs to train further."
        )
    else:
        return
    warnings.warn(message, ConvergenceWarning, stacklevel=5)


# ------------------------------------------------- optimizer and data split
def optimizer_kind(optimizer_or_state) -> str:
    """``"adam"`` or ``"sgd"``: the type of a live optimizer or of its saved state_dict."""
    if isinstance(optimizer_or_state, dict):
        groups = optimizer_or_state.get("param_groups", [{}])
    else:
        groups = optimizer_or_state.param_groups
    return "adam" if groups and "betas" in groups[0] else "sgd"


def optimizer_for(module, params: dict, live=None, saved: dict | None = None):
    """The optimizer for the current parameters, keeping what state it can.

    The live optimizer (or the state saved with a pickled model) is kept when
    its type is ``params["optimizer"]``, and its ``param_groups`` then take the
    current ``learning_rate``, ``momentum`` and ``weight_decay``; an
    optimizer of another type starts afresh, as scikit-learn's MLPs do with
    ``warm_start``.

    Parameters
    ----------
    module : torch.nn.Module
        Whose parameters are optimised.
    params : dict
        The estimator's parameters (``get_params()``).
    live : torch.optim.Optimizer, default=None
        The optimizer of the previous fit, if any.
    saved : dict, default=None
        A ``state_dict`` saved with a pickled model, if any.
    """
    torch = import_torch()
    kind = params["optimizer"]
    optimizer = live if live is not None and optimizer_kind(live) == kind else None
    if optimizer is None:
        parameters = list(module.parameters())
        rate, decay = params["learning_rate"], params["weight_decay"]
        if kind == "sgd":
            optimizer = torch.optim.SGD(
                parameters, lr=rate, momentum=params["momentum"], weight_decay=decay
            )
        else:
            optimizer = torch.optim.Adam(parameters, lr=rate, weight_decay=decay)
        if saved is not None and optimizer_kind(saved) == kind:
            optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        group["lr"] = float(params["learning_rate"])
        group["weight_decay"] = float(params["weight_decay"])
        if kind == "sgd":
            group["momentum"] = float(params["momentum"])
    return optimizer


def tensors_to_cpu(value: Any) -> Any:
    """Copy of a nested structure (dicts, lists, tuples) with every tensor on the CPU."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {key: tensors_to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(tensors_to_cpu(item) for item in value)
    return value


def split_validation(X: np.ndarray, target: np.ndarray, fraction: float, seed: int, stratify: bool):
    """``X_train, X_val, target_train, target_val`` for early stopping.

    Stratified by class when ``stratify`` (falling back to a plain split when
    a class is too small to stratify).

    Raises
    ------
    ValueError
        When the split would leave fewer than 2 validation rows or no
        training row.
    """
    n_rows = X.shape[0]
    n_validation = int(np.ceil(fraction * n_rows))
    if n_validation < 2 or n_rows - n_validation < 1:
        raise ValueError(
            f"early_stopping needs at least 2 validation rows and 1 training row; "
            f"validation_fraction={fraction} of {n_rows} rows gives "
            f"{n_validation}. Use more rows or a larger validation_fraction."
        )
    try:
        return train_test_split(
            X,
            target,
            test_size=n_validation,
            random_state=seed,
            stratify=target if stratify else None,
        )
    except ValueError:
        if not stratify:
            raise
        return train_test_split(X, target, test_size=n_validation, random_state=seed)
