"""The pieces of the finite networks' training loop (:mod:`sklearn_hyperkernel._training.loop`)."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

torch = pytest.importorskip("torch")

from sklearn_hyperkernel._training import loop as _training  # noqa: E402
from sklearn_hyperkernel._training.loop import (  # noqa: E402
    Plateau,
    TrainingRows,
    check_divergence,
    optimizer_for,
    run_epoch,
    split_validation,
    torch_threads,
    warn_if_not_learned,
)
from sklearn_hyperkernel.network import Hypernetwork  # noqa: E402


def small_network(seed: int = 0) -> Hypernetwork:
    return Hypernetwork(3, 2, f_width=8, g_width=4, generator=torch.Generator().manual_seed(seed))


def rows(n_rows: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal((n_rows, 3)))
    z = torch.as_tensor(rng.standard_normal((n_rows, 2)))
    return x, z, torch.as_tensor(rng.standard_normal((n_rows, 1)))


# ------------------------------------------------------------------ stopping rules
def test_loss_plateau_stops_after_patience_epochs_without_a_tol_improvement():
    rule = Plateau(tol=0.1, patience=2)
    # 1.0 and 0.8 improve by more than tol; 0.75 and 0.72 do not (0.72 > 0.75 - 0.1)
    assert [rule.update(v) for v in (1.0, 0.8, 0.75, 0.72)] == [False, False, False, True]
    assert rule.best == 0.72 and rule.watched == "training loss"
    # an improvement by more than tol resets the count
    rule = Plateau(tol=0.1, patience=2)
    assert [rule.update(v) for v in (1.0, 0.95, 0.8, 0.79, 0.78)] == [False] * 4 + [True]
    # tol=0: any decrease counts
    rule = Plateau(tol=0.0, patience=1)
    assert [rule.update(v) for v in (1.0, 0.9, 0.9)] == [False, False, True]


def test_validation_plateau_keeps_and_restores_the_best_weights():
    module = torch.nn.Linear(2, 1)
    rule = Plateau(tol=0.05, patience=2, maximize=True, keep_best=True)
    states = []
    for score in (0.5, 0.7, 0.72, 0.6):
        with torch.no_grad():
            module.weight.add_(1.0)  # each epoch changes the weights
        states.append(module.weight.detach().clone())
        stop = rule.update(score, module)
    # 0.72 is the best score (kept) but not better by tol: with 0.6, two epochs without
    assert stop and rule.best == 0.72 and rule.watched == "validation score"
    rule.restore_best(module)
    assert torch.equal(module.weight, states[2])
    # nothing kept: restore leaves the module alone
    untouched = Plateau(tol=0.0, patience=1, maximize=True)
    untouched.update(1.0)
    untouched.restore_best(module)
    assert torch.equal(module.weight, states[2])


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), 2.0e8 * 0.5 + 1.0])
def test_divergence_raises_naming_the_epoch_and_the_learning_rate(loss):
    with pytest.raises(ValueError, match=r"diverged.*epoch 4.*learning_rate \(currently 0\.3\)"):
        check_divergence(loss, reference=0.5, epoch=4, learning_rate=0.3)


def test_a_loss_up_to_1e8_times_the_reference_is_not_divergence():
    check_divergence(1e8 * 0.5, reference=0.5, epoch=1, learning_rate=0.3)
    check_divergence(0.0, reference=0.5, epoch=1, learning_rate=0.3)


# ---------------------------------------------------------------- rows and epochs
def test_training_rows_keep_distinct_x_only_when_they_repeat():
    x, z, target = rows(12)
    repeated = x[torch.tensor([0, 1, 2] * 4)]
    training = TrainingRows.build(repeated, z, target)
    assert training.x_unique.shape == (3, 3) and training.n_rows == 12
    assert torch.equal(training.x_unique[training.x_index], repeated)
    model = small_network()
    batch = torch.tensor([5, 0, 7, 3])
    with torch.no_grad():
        assert torch.allclose(
            training.forward(model, batch), model(repeated[batch], z[batch]), rtol=1e-13, atol=0
        )
    distinct = TrainingRows.build(x, z, target)  # 12 distinct x: not worth it
    assert distinct.x_unique is None and distinct.x_index is None


def test_run_epoch_is_a_plain_minibatch_loop():
    """One epoch equals the hand-written loop over the same order: same loss, same weights."""
    x, z, target = rows(10)
    order = torch.tensor([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])
    ours, theirs = small_network(), small_network()
    loss = run_epoch(
        ours,
        TrainingRows.build(x, z, target),
        lambda out, t: ((out - t) ** 2).mean(),
        torch.optim.SGD(ours.parameters(), lr=0.05),
        order,
        batch_size=4,
    )
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.05)
    total = 0.0
    for start in range(0, 10, 4):
        batch = order[start : start + 4]
        batch_loss = ((theirs(x[batch], z[batch]) - target[batch]) ** 2).mean()
        optimizer.zero_grad()
        batch_loss.backward()
        optimizer.step()
        total += batch_loss.item() * batch.shape[0]
    assert loss == pytest.approx(total / 10, rel=1e-12)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_run_epoch_reports_the_running_loss_ten_times():
    x, z, target = rows(40)
    reports = []
    model = small_network()
    loss = run_epoch(
        model,
        TrainingRows.build(x, z, target),
        lambda out, t: ((out - t) ** 2).mean(),
        torch.optim.SGD(model.parameters(), lr=0.0),
        torch.arange(40),
        batch_size=2,
        report=lambda *args: reports.append(args),
    )
    assert [r[:2] for r in reports] == [(2 * k, 20) for k in range(1, 11)]
    assert reports[-1][2] == pytest.approx(loss, rel=1e-12)  # the last one covers every row


# ------------------------------------------------------------ optimizer, split, threads
PARAMS = {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.5, "weight_decay": 0.01}


def test_optimizer_is_kept_while_its_type_is_unchanged_and_takes_the_current_values():
    model = small_network()
    sgd = optimizer_for(model, PARAMS)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (
        0.1,
        0.5,
        0.01,
    )
    again = optimizer_for(model, {**PARAMS, "learning_rate": 0.2, "momentum": 0.0}, live=sgd)
    assert again is sgd and sgd.param_groups[0]["lr"] == 0.2
    assert sgd.param_groups[0]["momentum"] == 0.0
    adam = optimizer_for(model, {**PARAMS, "optimizer": "adam"}, live=sgd)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 0.01
    # a saved state of the same type is loaded (momentum buffers), of another type ignored
    x, z, target = rows(6)
    ((model(x, z) - target) ** 2).mean().backward()
    sgd.step()
    saved = sgd.state_dict()
    loaded = optimizer_for(model, PARAMS, saved=saved)
    assert loaded is not sgd and all("momentum_buffer" in s for s in loaded.state.values())
    assert optimizer_for(model, {**PARAMS, "optimizer": "adam"}, saved=saved).state == {}


def test_validation_split_sizes_stratification_and_error():
    X = np.arange(40.0).reshape(20, 2)
    labels = np.array([0] * 15 + [1] * 5)
    X_train, X_val, y_train, y_val = split_validation(X, labels, 0.2, seed=0, stratify=True)
    assert X_val.shape == (4, 2) and X_train.shape == (16, 2)
    assert np.bincount(y_val).tolist() == [3, 1]  # the classes' proportions
    assert sorted(np.concatenate([X_train[:, 0], X_val[:, 0]])) == list(X[:, 0])
    # a class too small to stratify: a plain split instead
    rare = np.array([0] * 19 + [1])
    assert split_validation(X, rare, 0.2, seed=0, stratify=True)[1].shape == (4, 2)
    with pytest.raises(ValueError, match="at least 2 validation rows"):
        split_validation(X[:5], labels[:5], 0.1, seed=0, stratify=False)


def test_torch_threads_are_set_for_the_body_and_restored():
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(2):
        assert torch.get_num_threads() == 2
        raise RuntimeError
    assert torch.get_num_threads() == before


def test_missing_torch_is_an_import_error_saying_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("blocked")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ImportError, match=r"pip install sklearn-hyperkernel\[torch\]"):
        _training.import_torch()


# ----------------------------------------------------------------------- warnings
def estimator(**changes):
    settings = {
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "parameterization": "standard",
        "normalize_x": True,
        "normalize_y": True,
        "max_epochs": 20,
        "n_iter_no_change": 5,
        "tol": 1e-4,
        "loss_curve_": [0.9, 0.5],
    }
    return types.SimpleNamespace(**{**settings, **changes})


def test_not_learned_warnings_say_why_and_what_to_try():
    not_learned = "did not learn.*stopped by max_epochs=20"
    with pytest.warns(ConvergenceWarning, match=not_learned) as record:
        warn_if_not_learned(estimator(), 0.5, 20, converged=False, watched="training loss")
    remedy = str(record[0].message).split(";")[1]
    assert "another learning_rate" in remedy and "optimizer=" not in remedy
    paper = estimator(optimizer="sgd", parameterization="ntk", normalize_x=False)
    with pytest.warns(ConvergenceWarning, match="did not learn") as record:
        warn_if_not_learned(paper, 0.5, 8, converged=True, watched="training loss")
    remedy = str(record[0].message).split(";")[1]
    for option in (
        "optimizer='adam'",
        "a larger learning_rate",
        "parameterization='standard'",
        "normalize_x=True",
        "a larger max_epochs",
    ):
        assert option in remedy
    with pytest.warns(ConvergenceWarning, match="Training stopped after 6 epochs: the validation"):
        warn_if_not_learned(estimator(), 1.0, 6, converged=True, watched="validation score")
    with pytest.warns(ConvergenceWarning, match="max_epochs=20 epochs before the training loss"):
        warn_if_not_learned(estimator(), 1.0, 20, converged=False, watched="training loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_not_learned(estimator(), 1.0, 7, converged=True, watched="training loss")
        # nothing to learn (a constant target): never "did not learn"
        warn_if_not_learned(
            estimator(loss_curve_=[0.0]), 0.0, 3, converged=True, watched="training loss"
        )
