"""The experiment commands in their --quick mode, and the data builders they use."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("torch")

from conftest import PAPER_KERNEL  # noqa: E402

from sklearn_hyperkernel.experiments import __main__ as dispatcher  # noqa: E402
from sklearn_hyperkernel.experiments import fig1, fig2, table1  # noqa: E402

NUMBER = r"\d+\.\d+"


def _png_ok(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_table1_quick_writes_table_and_kernels_beat_the_mean(tmp_path):
    assert table1.main(["--quick", "--out", str(tmp_path), "--seeds", "1"]) == 0
    table = (tmp_path / "table1.md").read_text()
    for task in ("representation", "inpainting"):
        assert f"### {task}" in table
    # one seed: plain values, no "± 0.0000" spread that was never measured
    assert "±" not in table and "one seed (no error bars)" in table
    cells = [float(v) for v in re.findall(rf"\| ({NUMBER}) \|", table)]
    assert cells and all(0.0 <= v < 1.0 for v in cells)
    assert "hyper-nngp 0.051/0.045/0.037/0.026" in table
    assert _png_ok(tmp_path / "table1_reconstructions.png")
    errors = json.loads((tmp_path / "table1.json").read_text())["errors"]
    for task in ("representation", "inpainting"):
        for n in (10, 20):
            baseline = np.mean(errors[f"{task}|mean-predictor|-|{n}"])
            for model in ("hyperkernel", "hyper-nngp"):
                assert np.mean(errors[f"{task}|{model}|fourier|{n}"]) < baseline
                assert np.mean(errors[f"{task}|{model}|selected-cv|{n}"]) < baseline
            assert np.mean(errors[f"{task}|hyper-nngp|selected-ml|{n}"]) < baseline
            assert f"{task}|hyperkernel|selected-ml|{n}" not in errors
            assert f"{task}|hypernetwork|fourier|{n}" in errors
    assert "| hyper-nngp | selected-ml |" in table


def test_table1_marginal_likelihood_matches_sklearn_gp():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel

    from sklearn_hyperkernel import HyperNNGP
    from sklearn_hyperkernel.datasets import load_images, pixel_regression

    images, _ = load_images("digits")
    U, y = pixel_regression(images[:12], pixels_per_image=10, random_state=0)
    kernel = HyperNNGP(z_dim=2, f_depth=2, g_depth=2, z_encoding="fourier", length_scale=0.7)
    gram = kernel(U)
    ridges = [1e-3, 1e-1]
    values = table1.log_marginal_likelihoods(gram, y, ridges)
    diagonal = np.mean(np.diag(gram))
    for ridge, value in zip(ridges, values, strict=True):
        solved = np.linalg.solve(gram + ridge * diagonal * np.eye(len(y)), y)
        scale = y @ solved / len(y)  # the profiled-out constant
        gp_kernel = ConstantKernel(scale, "fixed") * kernel + WhiteKernel(
            scale * ridge * diagonal, "fixed"
        )
        gp = GaussianProcessRegressor(gp_kernel, optimizer=None).fit(U, y)
        assert value == pytest.approx(gp.log_marginal_likelihood_value_, rel=1e-6)
    # the selection picks the grid point of highest likelihood, on training rows only
    args = table1._parser().parse_args(
        ["--source", "digits", "--select-f-depths", "1", "2", "--select-g-depths", "2"]
    )
    args.select_length_scales, args.select_ridges = [0.7], ridges
    chosen = table1._select(images[:12], "representation", "nngp", "fourier", "ml", args, 0)
    assert chosen["f_depth"] in (1, 2) and chosen["ridge"] in ridges
    assert chosen["n_images"] == 12 and np.isfinite(chosen["score"])


def test_table1_depth_one_kernels_coincide_and_are_fitted_once(monkeypatch):
    from sklearn_hyperkernel import HyperKernel, HyperNNGP
    from sklearn_hyperkernel.datasets import load_images, pixel_regression

    images, _ = load_images("digits")
    U, _ = pixel_regression(images[:10], pixels_per_image=5, random_state=0)
    for f_depth, same in ((1, True), (2, False)):
        params = dict(z_dim=2, f_depth=f_depth, g_depth=1, z_encoding="fourier", length_scale=2.0)
        difference = np.max(np.abs(HyperKernel(**params)(U) - HyperNNGP(**params)(U)))
        assert bool(difference == 0.0) is same
    calls = []
    monkeypatch.setattr(table1, "_fit_predict_kernel", lambda *a: calls.append(a[3]) or a[3])
    cache, args = {}, table1._parser().parse_args([])
    for kernel in ("ntk", "nngp"):
        for f_depth in (1, 2):
            params = {"f_depth": f_depth, "g_depth": 1, "length_scale": 2.0, "ridge": 0.1}
            params["filter_size"] = 3
            table1._cached(
                cache, (None, None, "representation"), kernel, "fourier", params, args, 0
            )
    # ntk depth 1, ntk depth 2, nngp depth 2: at depth 1 the NNGP reuses the hyperkernel's fit
    assert calls == ["ntk", "ntk", "nngp"] and len(cache) == 3


def _table1_quick_args(*options):
    args = table1._parser().parse_args(["--quick", "--source", "digits", "--seeds", "1", *options])
    table1._quick_overrides(args)
    return args


def test_table1_conv_f_at_depth_one_is_the_dense_f():
    # f_depth=1: the conv f is its dense readout, and inpainting's masked image
    # (bottom half 0) gives the dense f on the top half the same kernel up to a factor
    options = ["--tasks", "inpainting", "--f-depth", "1", "--no-select", "--hn-epochs", "0"]
    dense = table1.run(_table1_quick_args(*options))["errors"]
    conv = table1.run(_table1_quick_args(*options, "--f-architecture", "conv"))["errors"]
    assert set(conv) == set(dense)
    for key in dense:
        assert np.allclose(conv[key], dense[key], rtol=1e-6, atol=0.0), key
    # deeper, the two f differ (a 3x3 conv is not a dense layer)
    options[3] = "3"
    dense = table1.run(_table1_quick_args(*options))["errors"]
    conv = table1.run(_table1_quick_args(*options, "--f-architecture", "conv"))["errors"]
    key = "inpainting|hyper-nngp|fourier|20"
    assert abs(conv[key][0] - dense[key][0]) > 1e-6


def test_table1_quick_conv_rows_and_ridge_reselection(tmp_path):
    options = ["--f-architecture", "conv", "--select-filter-sizes", "3", "5"]
    options += ["--select-ridge-images", "20", "--out", str(tmp_path)]
    assert table1.main(["--quick", "--source", "digits", "--seeds", "1", *options]) == 0
    table = (tmp_path / "table1.md").read_text()
    assert "f=conv 3x3" in table and "filter size [3, 5]" in table
    saved = json.loads((tmp_path / "table1.json").read_text())
    errors, chosen = saved["errors"], saved["selected_params"]
    for task in ("representation", "inpainting"):
        for n in (10, 20):
            baseline = errors[f"{task}|mean-predictor|-|{n}"][0]
            for model in ("hyperkernel", "hyper-nngp"):
                assert 0.0 < errors[f"{task}|{model}|fourier|{n}"][0] < baseline
            # the trained conv hypernetwork's row exists and is a finite error
            assert np.isfinite(errors[f"{task}|hypernetwork|fourier|{n}"][0])
            for key in (
                f"{task}|hyperkernel|selected-cv|{n}",
                f"{task}|hyper-nngp|selected-ml|{n}",
            ):
                assert 0.0 < errors[key][0] < baseline
                (point,) = chosen[key]
                assert point["filter_size"] in (3, 5) and point["n_images"] == 10
                # the ridge is chosen again on all N when N exceeds the 10 selection images
                assert point["n_ridge_images"] == n
                assert ("ridge_on_select_images" in point) is (n == 20)
                assert point["ridge"] in (1e-9, 1e-1)


def test_table1_ridge_reselection_maximises_the_score_on_more_images():
    from sklearn_hyperkernel.datasets import load_images

    images, _ = load_images("digits")
    args = _table1_quick_args("--select-ridge-images", "16")
    args.select_ridges = [1e-9, 1e-3, 1e-1, 1.0]
    chosen = table1._select(images[:16], "representation", "nngp", "fourier", "ml", args, 0)
    assert chosen["n_images"] == 10 and chosen["n_ridge_images"] == 16
    U, y = table1._training_rows(images[:16], "representation", args, 20_000)
    values = [chosen[name] for name in ("f_depth", "g_depth", "length_scale")]
    gram = table1._kernel("nngp", "fourier", *values, {})(U)
    scores = table1.log_marginal_likelihoods(gram, y, args.select_ridges)
    assert chosen["ridge"] == args.select_ridges[int(np.argmax(scores))]


def test_table1_union_of_draws_is_one_regression_on_their_pixels():
    from sklearn_hyperkernel import HyperKernelRegressor, config_context
    from sklearn_hyperkernel.datasets import load_images, pixel_regression

    images, _ = load_images("digits")
    train, test = images[:12], images[12:15]
    args = _table1_quick_args("--combine-draws", "union")
    args.draws = 3  # --quick's is 1
    params = {"f_depth": 3, "g_depth": 2, "length_scale": 2.0, "ridge": 1e-2, "filter_size": 3}
    prediction, y_test = table1._fit_predict_kernel(
        train, test, "inpainting", "nngp", "fourier", params, args, 4
    )
    # by hand: the three draws' rows (seeds 1000 * seed + draw) stacked, one Cholesky fit
    options = {"task": "inpainting", "coordinates": "pixel"}
    rows = [
        pixel_regression(train, pixels_per_image=20, random_state=4000 + d, **options)
        for d in range(3)
    ]
    U, y = np.vstack([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
    model = HyperKernelRegressor(
        "nngp", alpha=1e-2, alpha_scale="relative", z_dim=2, f_depth=3, g_depth=2,
        z_encoding="fourier", length_scale=2.0, f_bias_variance=0.0, g_bias_variance=0.0,
        normalize_x=False, normalize_y=False,
    )  # fmt: skip
    U_test, expected_y = pixel_regression(test, **options)
    assert np.array_equal(y_test, expected_y)
    expected = model.fit(U, y).predict(U_test)
    assert model.solver_ == "cholesky" and len(y) == 720
    assert np.allclose(prediction, expected, rtol=1e-10, atol=1e-12)
    # one regression on all the pixels is not the mean of one regression per draw
    args.combine_draws = "average"
    averaged, _ = table1._fit_predict_kernel(
        train, test, "inpainting", "nngp", "fourier", params, args, 4
    )
    assert np.max(np.abs(averaged - expected)) > 1e-3
    # beyond the Cholesky size the union is solved by CG (never Nystrom), to its tolerance
    args.combine_draws, args.cg_tol = "union", 1e-8
    with config_context(auto_cholesky_max_gram_bytes=8 * 700**2):
        assert table1._solver_options(720, args) == {"solver": "cg", "tol": 1e-8, "cg_rank": 1000}
        assert table1._solver_options(700, args) == {}
        by_cg, _ = table1._fit_predict_kernel(
            train, test, "inpainting", "nngp", "fourier", params, args, 4
        )
    assert np.allclose(by_cg, expected, rtol=0.0, atol=1e-6)


def test_table1_kernels_and_no_fixed_choose_the_rows():
    options = ["--tasks", "inpainting", "--hn-epochs", "0", "--select-methods", "cv", "ml"]
    errors = table1.run(_table1_quick_args(*options, "--kernels", "nngp", "--no-fixed"))["errors"]
    assert {key.rsplit("|", 1)[0] for key in errors} == {
        "inpainting|mean-predictor|-",
        "inpainting|hyper-nngp|selected-cv",
        "inpainting|hyper-nngp|selected-ml",
    }
    both = table1.run(_table1_quick_args(*options))["errors"]
    # the rows that remain are the full run's, value for value
    for key, values in errors.items():
        assert values == both[key], key
    assert "inpainting|hyperkernel|fourier|20" in both


def test_table1_header_names_only_the_fixed_settings_a_row_used():
    args = _table1_quick_args("--length-scale", "3", "--f-depth", "2", "--ridge", "0.01")
    assert (
        "Fourier length scale=3, f_depth=2, g_depth=2, ridge=0.01 x diag, "
        in table1._fixed_label(args)
    )
    args.no_fixed = True  # the hypernetwork still reads the length scale and depths
    assert table1._fixed_label(args) == (
        "no kernel rows at fixed settings, the hypernetwork's "
        "Fourier length scale=3, f_depth=2, g_depth=2, "
    )
    args.hn_epochs = 0  # nothing used them: none is listed
    assert table1._fixed_label(args) == "no rows at fixed settings, "
    options = ["--tasks", "inpainting", "--hn-epochs", "0", "--no-fixed", "--kernels", "nngp"]
    args = _table1_quick_args(*options, "--select-methods", "cv")
    table = table1.markdown_table(table1.run(args), args)
    assert "no rows at fixed settings, draws=" in table and "length scale=" not in table


def test_table1_union_selection_scores_all_draws_grouped_by_image():
    from sklearn_hyperkernel.datasets import load_images

    images, _ = load_images("digits")
    args = _table1_quick_args("--combine-draws", "union")
    args.draws = 2
    U, y = table1._selection_rows(images[:5], "representation", args, 10_000)
    one, _ = table1._training_rows(images[:5], "representation", args, 10_000)
    # the first draw is the one-draw selection's, the second another draw of the same images
    assert U.shape[0] == 2 * one.shape[0] == 200
    assert np.array_equal(U[:100], one) and not np.array_equal(U[100:, -2:], one[:, -2:])
    assert np.array_equal(U[100:, :-2], one[:, :-2])
    # CV folds hold out whole images: both draws' rows of an image are in one fold
    args.select_ridges = [1e-3]
    gram = table1._kernel("nngp", "fourier", 2, 2, 2.0, {})(U)
    score = table1._ridge_scores(gram, y, 5, "cv", args)
    groups = np.tile(np.repeat(np.arange(5), 20), 2)
    folds = list(table1.GroupKFold(n_splits=2).split(gram, y, groups))
    assert np.allclose(-score, table1._cv_errors(gram, y, folds, [1e-3]), rtol=1e-12)


@pytest.mark.parametrize(
    ("option", "value", "name"),
    [("--filter-size", "4", "filter_size"), ("--select-filter-sizes", "0", "filter_size")],
)
def test_table1_bad_conv_options_name_the_parameter(option, value, name):
    with pytest.raises(ValueError, match=name):
        table1.run(_table1_quick_args("--f-architecture", "conv", option, value))


@pytest.mark.parametrize(
    ("option", "value", "name"),
    [("--draws", "0", "draws"), ("--cg-rank", "-1", "cg_rank"), ("--cg-tol", "0", "cg_tol")],
)
def test_table1_bad_draw_and_cg_options_name_the_parameter(option, value, name):
    args = table1._parser().parse_args(["--combine-draws", "union", option, value])
    with pytest.raises(ValueError, match=name):
        table1._check_args(args)


def test_table1_quick_union_keeps_two_draws():
    # --quick's one draw would make the union the average; it keeps two draws for the union
    assert _table1_quick_args("--combine-draws", "union").draws == 2
    assert _table1_quick_args().draws == 1


def test_table1_conv_hypernetwork_is_convolutional():
    args = _table1_quick_args("--f-architecture", "conv", "--filter-size", "5")
    params = table1.paper_hypernetwork(args, 0, (8, 8)).get_params()
    assert (params["f_architecture"], params["image_shape"], params["filter_size"]) == (
        "conv",
        (8, 8),
        5,
    )
    assert table1.paper_hypernetwork(_table1_quick_args(), 0).get_params()["f_architecture"] == (
        "dense"
    )


def test_fig1_quick_variances_and_closed_form(tmp_path, capsys):
    assert fig1.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "fig1.json").read_text())
    # even the quick run shows the paper's trend: the variance falls with f's width
    # (measured slope about -0.8), and says so
    assert fig1.width_trend(results["widths"], results["variance"]["f"]) < -0.5
    assert "as in the paper's Fig. 1" in printed
    fake = {"widths": [8, 32], "variance": {"f": [0.005, 0.08]}}
    assert "does NOT fall" in fig1.trend_sentence(fake, type("A", (), {"seeds": 5})())
    for which in ("f", "g"):
        variances = results["variance"][which]
        assert len(variances) == len(results["widths"]) and all(v > 0 for v in variances)
    closed_form = np.asarray(results["closed_form"])
    assert np.all(np.isfinite(closed_form)) and closed_form[0] > closed_form[-1]
    widest = results["curves"][str(max(int(k) for k in results["curves"]))]
    assert np.max(np.abs(np.asarray(widest["mean"]) - closed_form)) < 0.5 * closed_form[0]
    assert _png_ok(tmp_path / "fig1_variance.png") and _png_ok(tmp_path / "fig1_theta.png")


def test_fig2_quick_accuracy_curves(tmp_path):
    assert fig2.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "fig2.json").read_text())
    assert set(results["accuracy"]) == {"3x10", "6x10"}
    for runs in results["accuracy"].values():
        assert len(runs) == 1 and len(runs[0]) == 8 and all(0.0 <= a <= 1.0 for a in runs[0])
    # It learns: chance is 1/12 = 0.083 (+- 0.016 on 300 test rows); the shallow g
    # reaches ~0.34 after 8 epochs and beats the deeper one (as in the paper).
    shallow, deep = results["accuracy"]["3x10"][0], results["accuracy"]["6x10"][0]
    assert shallow[-1] > 0.2 and shallow[-1] > shallow[0] + 0.1
    assert shallow[-1] > deep[-1]
    assert results["args"]["parameterization"] == "standard"
    assert not results["args"]["fixed_rotations"]
    text = (tmp_path / "fig2.md").read_text()
    assert "fresh rotations each epoch" in text and "1 seed(s)" in text
    # one run: plain values, no "± 0.000" spread that was never measured
    assert "±" not in text.split("\n| g depth")[1]
    assert _png_ok(tmp_path / "fig2_accuracy.png")


def test_fig2_defaults_are_the_papers_and_options_reach_the_note():
    defaults = fig2._parser().parse_args([])
    paper = dict(f_depth=4, f_width=200, g_depths=[3, 6, 8], g_widths=[10, 50, 100])
    paper.update(learning_rate=0.01, momentum=0.0, batch_size=100, epochs=100, seeds=100)
    assert {name: getattr(defaults, name) for name in paper} == paper
    assert (defaults.parameterization, defaults.n_train, defaults.test_images) == (
        "standard",
        None,
        1000,
    )
    args = fig2._parser().parse_args(["--parameterization", "ntk", "--fixed-rotations"])
    results = {"n_train": 4000, "n_test": 1000, "n_images": 5000, "seeds": [0, 1, 2]}
    note = fig2.reduction_note(args, results)
    assert "ntk parameterisation" in note and "fixed rotations drawn once" in note
    assert "from the 4000 training images" in note and "3 seed(s)" in note


def test_fig2_rotation_rows_of_colour_images_rotate_every_channel_alike():
    from sklearn_hyperkernel.datasets import load_images

    grey, _ = load_images("digits", n_samples=6, random_state=0)
    # channel c is (c + 1) / 3 times the grey image: rotation is linear and no value
    # leaves [0, 1], so each channel of x and z is (c + 1) times channel 0
    colour = np.stack([grey * (c + 1) / 3 for c in range(3)], axis=-1)
    U, y = fig2.rotation_rows(colour, 7, random_state=0)
    n = 64
    assert U.shape == (7, 2 * 3 * n) and y.shape == (7,) and set(y) <= set(range(12))
    x, z = U[:, : 3 * n], U[:, 3 * n :]
    for c in (1, 2):
        np.testing.assert_allclose(x[:, c * n : (c + 1) * n], (c + 1) * x[:, :n], atol=1e-12)
        np.testing.assert_allclose(z[:, c * n : (c + 1) * n], (c + 1) * z[:, :n], atol=1e-12)
    assert not np.allclose(x, z)  # z is rotated further
    with pytest.raises(ValueError, match="images must have shape"):
        fig2.rotation_rows(grey[0], 3)


def test_fig2_run_takes_any_image_array(tmp_path):
    from sklearn_hyperkernel.datasets import load_images

    grey, _ = load_images("digits", n_samples=40, random_state=0)
    colour = np.stack([grey, grey[::-1], grey], axis=-1)  # (40, 8, 8, 3), like CIFAR-10
    args = fig2._parser().parse_args(
        ["--epochs", "2", "--seeds", "2", "--g-depths", "2", "--g-widths", "4"]
        + ["--f-width", "8", "--test-images", "10", "--batch-size", "10"]
    )
    for architecture in ("package", "authors"):
        args.architecture = architecture
        results = fig2.run(args, images=colour)
        assert results["z_dim"] == 192 and results["n_train"] == 30 and results["n_test"] == 10
        runs = results["accuracy"]["2x4"]
        assert len(runs) == 2 and all(len(curve) == 2 for curve in runs)
        # each test accuracy is a multiple of 1/10 (10 test rows)
        assert all(abs(10 * a - round(10 * a)) < 1e-9 for curve in runs for a in curve)
        # seeded: the same accuracies again
        assert fig2.run(args, images=colour)["accuracy"] == results["accuracy"]
    with pytest.raises(ValueError, match="test_images=10 leaves no training image"):
        fig2.run(args, images=colour[:10])
    # the command's entry point takes the array too
    options = ["--epochs", "1", "--seeds", "1", "--g-depths", "2", "--g-widths", "4"]
    options += ["--f-width", "8", "--test-images", "10", "--out", str(tmp_path)]
    assert fig2.main(options, images=colour) == 0
    assert json.loads((tmp_path / "fig2.json").read_text())["z_dim"] == 192


def test_dispatcher_usage_and_unknown_name(capsys):
    assert dispatcher.main(["--help"]) == 0
    assert dispatcher.main(["nope"]) == 2
    assert "table1" in capsys.readouterr().out


def _interpolation_quick_run(*options):
    from sklearn_hyperkernel.experiments import interpolation

    args = interpolation._parser().parse_args(["--quick", *options])
    interpolation._quick_overrides(args)
    return interpolation, args, interpolation.run(args)


# the quick run's network is too small and short to learn, and says so
@pytest.mark.filterwarnings("ignore:The network did not learn")
def test_interpolation_quick_writes_figure_and_endpoints_beat_the_mean(tmp_path):
    assert dispatcher.main(["interpolation", "--quick", "--out", str(tmp_path)]) == 0
    assert _png_ok(tmp_path / "interpolation.png")
    summary = json.loads((tmp_path / "interpolation.json").read_text())
    assert summary["args"]["pairs"] == [[7, 5], [5, 6]]
    assert summary["ts"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert summary["n_train_rows"] == 20 * 20
    # decoding is linear in the kernel row: the interpolants are exact blends
    assert summary["linearity_gap"] < 1e-10
    errors = summary["endpoint_mse"]
    assert set(errors) == {"hyperkernel", "hypernetwork", "hypernetwork-output", "mean-predictor"}
    for digit in ("5", "6", "7"):
        # held-out digits from 20 training images: the hyperkernel's reconstruction
        # beats the constant mean (measured 0.050 / 0.115 / 0.058 against 0.059 / 0.135 / 0.065)
        assert 0.0 < errors["hyperkernel"][digit] < errors["mean-predictor"][digit]
        assert errors["hypernetwork"][digit] > 0.0


@pytest.mark.filterwarnings("ignore:The network did not learn")
def test_interpolation_quick_conv_writes_figure_and_endpoints_beat_the_mean(tmp_path):
    options = ["interpolation", "--quick", "--f-architecture", "conv", "--out", str(tmp_path)]
    assert dispatcher.main(options) == 0
    assert _png_ok(tmp_path / "interpolation.png")
    summary = json.loads((tmp_path / "interpolation.json").read_text())
    assert summary["args"]["f_architecture"] == "conv" and summary["linearity_gap"] < 1e-10
    errors = summary["endpoint_mse"]
    for digit in ("5", "6", "7"):
        # measured 0.052 / 0.116 / 0.058 against the mean's 0.059 / 0.135 / 0.065
        assert 0.0 < errors["hyperkernel"][digit] < errors["mean-predictor"][digit]
        assert errors["hypernetwork"][digit] > 0.0


def test_interpolation_without_hypernetwork_has_the_hyperkernel_rows_only():
    interpolation, args, results = _interpolation_quick_run("--hn-epochs", "0")
    assert list(results["interpolants"]) == ["hyperkernel"]
    assert set(results["endpoint_mse"]) == {"hyperkernel", "mean-predictor"}
    assert results["models"]["hypernetwork"] is None


@pytest.mark.filterwarnings("ignore:The network did not learn")
def test_interpolation_endpoints_are_the_kernel_reconstructions():
    from sklearn_hyperkernel import HyperKernel

    # a larger ridge than the paper's, so that an independent solve of the float32
    # empirical-NTK system agrees with the command's to ~1e-8
    interpolation, args, results = _interpolation_quick_run("--ridge", "1e-3")
    U, y, queries = results["rows"]
    hyperkernel, network = results["models"]["hyperkernel"], results["models"]["hypernetwork"]
    ts = results["ts"]
    assert np.allclose(ts, np.linspace(0.0, 1.0, 5))
    # endpoints are held out: no training row carries their image
    images = {tuple(np.round(row, 12)) for row in U[:, :-2]}
    for digit in (5, 6, 7):
        assert tuple(np.round(queries[digit][0, :-2], 12)) not in images
        assert queries[digit].shape == (784, 786)

    # the feature vectors are the closed-form hyperkernel rows against the training rows
    kernel = HyperKernel(  # the paper's settings, as the experiment passes them
        **PAPER_KERNEL,
        z_dim=2,
        f_depth=3,
        g_depth=2,
        z_encoding="fourier",
        length_scale=args.length_scale,
    )
    np.testing.assert_allclose(
        results["features"]["hyperkernel"][7], kernel(queries[7], U), rtol=1e-10
    )
    # empirical NTK Gram and Eq. 18, solved independently of the command
    gram = network.empirical_ntk(U)
    ridge = args.ridge * np.mean(np.diag(gram))
    entk_coef = np.linalg.solve(gram + ridge * np.eye(len(y)), y)
    for a, b in args.pairs:
        path = results["interpolants"]["hyperkernel"][f"{a},{b}"]
        assert path.shape == (5, 28, 28)
        # t = 0 and t = 1 are the regressor's own reconstructions of the two images
        np.testing.assert_allclose(path[0].ravel(), hyperkernel.predict(queries[a]), atol=1e-12)
        np.testing.assert_allclose(path[-1].ravel(), hyperkernel.predict(queries[b]), atol=1e-12)
        # t = 1/2 decodes the mean kernel row: the mean of the two reconstructions
        np.testing.assert_allclose(path[2], 0.5 * (path[0] + path[-1]), atol=1e-12)
        entk = results["interpolants"]["hypernetwork"][f"{a},{b}"]
        rows_a, rows_b = network.empirical_ntk(queries[a], U), network.empirical_ntk(queries[b], U)
        for t_index, t in enumerate(ts):
            row = (1 - t) * rows_a + t * rows_b
            np.testing.assert_allclose(
                entk[t_index].ravel(), row @ entk_coef, atol=1e-6 * np.abs(y).max()
            )
    with pytest.raises(ValueError, match="one shape"):
        interpolation.interpolate(np.zeros((3, 4)), np.zeros((3, 5)), [0.0, 1.0])
    with pytest.raises(ValueError, match="steps"):
        interpolation.run(interpolation._parser().parse_args(["--steps", "1"]))
    with pytest.raises(SystemExit):  # argparse reports a malformed pair
        interpolation._parser().parse_args(["--pairs", "7"])


def _depth_one_results():
    """Results of one task at N = 10 where every selection chose depth (1, 1), so the three
    selected predictions (and rows) are the same, unlike the paper-setting kernels."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(2, 28, 28))
    shared = rng.uniform(size=truth.size)
    pictures = {
        "test_images": truth,
        ("representation", "mean predictor"): np.full(truth.size, 0.1),
    }
    errors = {"representation|mean-predictor|-|10": [0.1]}
    for kernel, value in (("hyperkernel", 0.06), ("hyper-nngp", 0.05)):
        pictures[("representation", kernel)] = rng.uniform(size=truth.size)
        errors[f"representation|{kernel}|fourier|10"] = [value]
    chosen = {"f_depth": 1, "g_depth": 1, "length_scale": 2.0, "ridge": 0.1}
    selected = {}
    for kernel, method in (("hyperkernel", "cv"), ("hyper-nngp", "cv"), ("hyper-nngp", "ml")):
        pictures[("representation", f"{kernel}, selected-{method}")] = shared
        errors[f"representation|{kernel}|selected-{method}|10"] = [0.04]
        selected[f"representation|{kernel}|selected-{method}|10"] = [chosen]
    return {"pictures": pictures, "errors": errors, "selected_params": selected, "seconds": 1.0}


def test_table1_picture_merges_identical_selections_and_labels_the_table(tmp_path):
    results = _depth_one_results()
    columns = table1._picture_columns(results, "representation", 10)
    titles = [title for title, _, _ in columns]
    assert titles[0] == "mean predictor" and [mse for _, _, mse in columns] == [
        0.1,
        0.06,
        0.05,
        0.04,
    ]
    assert titles[3].splitlines() == [
        "hyperkernel CV-selected",
        "(1, 1, 2, 0.1)",
        "(depth 1: both kernels equal)",
        "= hyper-nngp CV-selected",
        "= hyper-nngp ML-selected",
    ]
    args = table1._parser().parse_args(["--sizes", "10", "--tasks", "representation"])
    args.n_test, args.encodings = 2, ["fourier"]
    table = table1.markdown_table(results, args)
    same = "= hyperkernel selected-cv (all chose depth (1, 1), where the two kernels are one)"
    assert f"| hyper-nngp | selected-cv | 0.0400 | {same}" in table
    assert f"| hyper-nngp | selected-ml | 0.0400 | {same}" in table
    assert "| hyperkernel | selected-cv | 0.0400 |  |" in table
    assert "| hyper-nngp | fourier | 0.0500 |  |" in table
    table1.plot_reconstructions(results, args, str(tmp_path / "picture.png"), n_show=2)
    assert _png_ok(tmp_path / "picture.png")
