"""The parameters text of the kernels' docstrings (numpydoc), declared once.

The architecture entries shared with the estimators and the torch network come
from :func:`._params.architecture.parameters_doc`; the kernels' own entries (their
length scale is a hyperparameter, ``normalize_x`` is off, the engine's
``block_size`` / ``n_jobs`` / ``device`` / ``dtype``) are here.
"""

from __future__ import annotations

from .architecture import parameters_doc

__all__ = ["KERNEL_PARAMETERS_DOC"]

KERNEL_DOCS = {
    "length_scale": """\
    length_scale : float or array-like of shape (z_dim,), default=0.5
        Length scale of the Fourier encoding, in the units of z; one per z
        column gives an anisotropic encoding. A hyperparameter (fitted in log
        space by ``GaussianProcessRegressor``) with ``"fourier"``; fixed and
        unused with ``"linear"``. 0.5 suits coordinates in ``[-1, 1]`` and
        standardised columns (the user guide explains the choice).""",
    "length_scale_bounds": """\
    length_scale_bounds : pair of floats >= 0 or "fixed", default=(1e-5, 1e5)
        Bounds on ``length_scale``.""",
    "f_bias_variance": """\
    f_bias_variance : float >= 0, default=1.0
        Variance ``bf`` of the biases of f's layers, its output layer
        included (NTK parameterisation, as neural-tangents'
        ``Dense(b_std=sqrt(bf))``; docs/math.md, "Biases"). 1.0, measured
        with ``normalize_x=True`` (x's ``|x|^2 / n0 = 1``) on pixel tasks and
        in scikit-learn's kernel tools (user guide, "Why the defaults are
        what they are"). A hyperparameter:
        a positive value is fitted in log space by
        ``GaussianProcessRegressor`` within ``f_bias_variance_bounds``;
        exactly 0 is the paper's bias-free f and the hyperparameter is then
        fixed (log 0 does not exist: start from a small positive value to
        learn it).""",
    "g_bias_variance": """\
    g_bias_variance : float >= 0, default=0.1
        Variance ``bg`` of the biases of g's layers, which f generates like
        g's weights (``Lambda^l = S_f (Sigma^{l-1} + bg)``; docs/math.md,
        "Biases"); 0.1 measured as ``f_bias_variance``. A hyperparameter as
        ``f_bias_variance``: fitted in log space when positive, fixed at
        exactly 0 (the bias-free g).""",
    "f_bias_variance_bounds": """\
    f_bias_variance_bounds : pair of floats > 0 or "fixed", default=(1e-5, 1e5)
        Bounds on ``f_bias_variance`` (unused while it is 0).""",
    "g_bias_variance_bounds": """\
    g_bias_variance_bounds : pair of floats > 0 or "fixed", default=(1e-5, 1e5)
        Bounds on ``g_bias_variance`` (unused while it is 0).""",
    "normalize_x": """\
    normalize_x : bool, default=True
        Rescale every non-zero x to ``|x|^2 / n0 = 1`` first (the authors'
        code puts images on the unit sphere). Without biases the kernels are
        positively homogeneous of degree ``g_depth`` in x (``k(cx, x') = c^H
        k(x, x')``); with it they depend on x's direction only, so a row's
        norm (for example after a ``StandardScaler``) cannot inflate a
        prediction, and the kernel's scale is ``~1`` whatever n0, the scale
        the default bias variances are measured against. On by default: with
        raw rows ``SVC``, ``GaussianProcessClassifier`` and ``Nystroem``
        learned nothing on pixel data (issue 21). ``False`` with both bias
        variances 0 is the paper's closed form of the raw rows. A kernel
        cannot fit a transform, so it has no counterpart of
        :class:`HyperKernelRegressor`'s fitted ``normalize_x="scale"``: when
        x's norm carries information (a shape code), pass ``False`` and put x
        to a scale near ``|x|^2 / n0 ~ 1`` yourself (a ``StandardScaler``).""",
    "block_size": """\
    block_size : int, default=None
        Rows per block: the consecutive rows of a Gram (or of a product
        ``K @ V``) that one task computes, against the columns it needs; the
        recursions then run on tiles of the same number of rows. None chooses
        blocks of about 2^22 entries (for BLAS) and tiles of about 2^17 (one
        tile per block of 2^25 entries on a GPU; these sizes are set by
        :func:`~sklearn_hyperkernel.set_config`). Results do not depend on
        it.""",
    "n_jobs": """\
    n_jobs : int, default=None
        Parallel workers over blocks (joblib), threads by default: None is as
        many as BLAS uses (every core unless ``OMP_NUM_THREADS`` or a
        ``threadpoolctl`` limit says fewer) or the ``n_jobs`` of a
        ``joblib.parallel_config`` context; 1 runs the blocks one after the
        other (BLAS and numba still thread inside them); -1 all cores. Inside
        ``parallel_config(backend="dask")`` the blocks run on a Dask cluster
        (see the user guide).""",
    "device": """\
    device : str, default=None
        Where the recursions run: None with numpy on the CPU; ``"cpu"``,
        ``"cuda"`` or ``"cuda:<index>"`` with torch on that device (the same
        code through the array API); ``"auto"`` on CUDA when torch sees a GPU,
        else numpy. The result is a float64 numpy array in every case. A
        device this machine lacks raises a ``ValueError``; a kernel unpickled
        on a machine without the GPU it was saved with falls back to numpy
        with a ``DeviceFallbackWarning``.""",
    "dtype": """\
    dtype : {"float64", "float32"}, default="float64"
        Precision of the recursions, much faster on GPUs in float32. Measured
        float32 agreement with float64 (largest error / largest entry, MNIST
        pixel rows and random rows): about 1e-6 with the Fourier encoding;
        with the linear encoding, pairs of parallel z (``z' = c z``, e.g.
        pixel coordinates on one ray) differ by up to 1e-4 (the correlation
        is 1 only up to rounding there, and the ReLU's derivative dual has an
        infinite slope at 1). Equal rows, equal x and equal z are exact in
        both precisions.""",
    "verbose": """\
    verbose : int, default=0
        1 prints a progress line every few seconds while a Gram or a product
        with it is computed, 2 one per block.""",
}
KERNEL_PARAMETERS_DOC = "\n    Parameters\n    ----------\n" + parameters_doc(
    "z_dim",
    "f_depth",
    "g_depth",
    "z_encoding",
    "length_scale",
    "length_scale_bounds",
    "activation",
    "negative_slope",
    "f_bias_variance",
    "g_bias_variance",
    "f_bias_variance_bounds",
    "g_bias_variance_bounds",
    "normalize_x",
    "f_architecture",
    "image_shape",
    "filter_size",
    "block_size",
    "n_jobs",
    "device",
    "dtype",
    "verbose",
    extra=KERNEL_DOCS,
)
