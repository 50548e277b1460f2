"""Pictures of a run: valid PNGs, and the 2-D posterior grids against an exact posterior."""

import contextlib
import os
import runpy
import sys

import numpy as np
import pytest

import vizoo
from tests import ppca
from vizoo import cli, plots, runs
from vizoo import config as run_config
from vizoo.losses import IWAELoss
from vizoo.models import VAE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    assert os.path.getsize(path) > 1000, path
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50, image.shape


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run"))
    splits = vizoo.data.load("digits", batch_size=100)
    model = VAE(64, 2, hidden_units=[16], seed=0)
    model.initialize_output_bias(splits.train_mean)
    model.compile(optimizer="adam", loss=IWAELoss(k=2, kl_warmup_epochs=1))
    runs.fit_run(model, splits.train, run_dir, 2, splits.validation, verbose=0)
    return run_dir, model, splits


def test_plot_run_writes_valid_pngs(trained_run):
    run_dir, model, splits = trained_run
    written = plots.plot_run(run_dir, model=model, data=splits.test)
    names = sorted(os.path.basename(path) for path in written)
    assert names == ["posteriors.png", "reconstructions.png", "samples.png", "training_curves.png"]
    for path in written:
        assert_png(path)


def test_a_failed_picture_write_keeps_the_picture_that_was_there(trained_run, tmp_path, monkeypatch):
    import matplotlib.figure

    _, model, _ = trained_run
    path = str(tmp_path / "samples.png")
    plots.plot_samples(model, path)
    before = open(path, "rb").read()

    def disk_full(self, target, **kwargs):
        with open(target, "wb") as f:
            f.write(PNG_SIGNATURE)  # a few bytes, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space"):
        plots.plot_samples(model, path, seed=1)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["samples.png"]


def test_posterior_grids_match_an_exact_posterior():
    """pPCA with q set to the exact posterior: the numerically normalized p(z|x) grid equals q's."""
    weights, bias = ppca.ppca_parameters()
    weights = weights[:, :2]  # two informative latent units
    model = ppca.ppca_vae(weights, bias)
    x = ppca.sample_data(3, weights, bias).astype("float32")
    true, approx, edges = plots.posterior_grids(model, x, grid_size=40, extent=3.0)
    assert true.shape == approx.shape == (3, 40, 40) and edges.shape == (41,)
    np.testing.assert_allclose(true.sum(axis=(1, 2)), 1.0, atol=1e-9)
    np.testing.assert_allclose(true, approx, atol=1e-5)
    # ... and differs from a wrong q (the prior's offset)
    shifted = ppca.ppca_vae(weights, bias, loc_offset=1.0)
    _, wrong, _ = plots.posterior_grids(shifted, x, grid_size=40, extent=3.0)
    assert np.abs(true - wrong).max() > 1e-3
    assert plots.plot_samples(model, "unused.png") is None  # 5 features are not an image


def test_flow_posterior_is_drawn_from_samples(tmp_path):
    model = VAE(64, 2, hidden_units=[8], posterior="planar", seed=0)
    x = (np.random.default_rng(0).random((2, 64)) < 0.5).astype("float32")
    true, approx, _ = plots.posterior_grids(model, x, grid_size=20, num_samples=2000)
    np.testing.assert_allclose(approx.sum(axis=(1, 2)), 1.0, atol=1e-9)  # a histogram of q's samples
    assert_png(plots.plot_posteriors([("a", model), ("b", model)], x, str(tmp_path / "p.png")))
    with pytest.raises(ValueError, match="Received: latent_dim=3"):
        plots.posterior_grids(VAE(64, 3, hidden_units=[8]), x)


@contextlib.contextmanager
def _argv(argv):
    saved = sys.argv
    sys.argv = list(argv)
    try:
        yield
    finally:
        sys.argv = saved


# (runpy warns that this process imported vizoo.plots before: a fresh `python -m vizoo.plots` does not.)
@pytest.mark.filterwarnings("ignore:'vizoo.plots' found in sys.modules:RuntimeWarning")
def test_plots_command_recreates_a_saved_run(trained_run, tmp_path, capsys):
    run_dir, model, _ = trained_run
    run_config.write_run_config(cli.build_parser(), cli.build_parser().parse_args(["--latent-dim", "2"]), run_dir)
    for name in ("samples.png", "posteriors.png"):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    # `python -m vizoo.plots RUN_DIR`, run as -m runs it (its __main__ block), in this process: an interpreter
    # start costs seconds.
    with pytest.raises(SystemExit) as exit_info:
        with _argv(["vizoo.plots", run_dir]):
            runpy.run_module("vizoo.plots", run_name="__main__", alter_sys=True)
    assert exit_info.value.code in (0, None)
    assert_png(os.path.join(run_dir, "samples.png"))
    assert_png(os.path.join(run_dir, "posteriors.png"))
    # The comparison of several runs and a bad directory, through the same entry point in this process.
    comparison = str(tmp_path / "compare.png")
    plots.main([run_dir, run_dir, "--out", comparison])
    assert_png(comparison)
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(tmp_path / "nothing")])
    assert exit_info.value.code == 2 and "has no model.keras" in capsys.readouterr().err
    for examples in ("0", "-3", "40"):
        with pytest.raises(SystemExit) as exit_info:
            plots.main([run_dir, "--examples", examples])
        assert exit_info.value.code == 2 and f"Received: examples={examples}" in capsys.readouterr().err



@pytest.mark.parametrize("value_name", ["bound", "estimate"])
def test_training_curves_say_what_the_loss_is(value_name, tmp_path, monkeypatch):
    # A Rényi loss with alpha < 0 estimates log p(x) without bounding it: its curves must not say "bound".
    pyplot, drawn = plots._pyplot(), []

    def subplots(*args, **kwargs):
        fig, ax = pyplot.subplots(*args, **kwargs)
        drawn.append(ax)
        return fig, ax

    monkeypatch.setattr(plots, "_pyplot", lambda: type("Pyplot", (), {"subplots": staticmethod(subplots),
                                                                      "close": staticmethod(pyplot.close)}))
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,250.0,251.0\n1,240.0,242.0\n")
    plots.plot_history(str(tmp_path / "history.csv"), str(tmp_path / "curves.png"), value_name)
    [ax] = drawn
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == [f"training {value_name}", f"validation {value_name}"]
    assert ax.get_ylabel() == ("bound on log p(x) (nats)" if value_name == "bound" else "estimate of log p(x) (nats)")
