"""f's kernel: the pair quantities of the hypernetwork f, one file per architecture.

The Gram engine (:mod:`.._gram`) asks f, on the distinct x rows, for what g's
recursion needs (docs/math.md): per distinct x the output variance
``S_f(x, x)`` and ``Theta^f(x, x)``, per pair of distinct x the correlations
``S_f(x, x') / sqrt(S_f(x, x) S_f(x', x'))`` and ``Theta^f(x, x') / sqrt(...)``.
g's part, the coincidence rules, blocks, the fused pass, the operator and the
solvers do not depend on which f produced them.
"""
