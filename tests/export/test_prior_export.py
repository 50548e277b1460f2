import pytest

from vizoo.export import export_prior
from vizoo.models import VAE

# The exported densities are served without vizoo in tests/export/test_serving.py.


def test_bad_version_is_named(tmp_path):
    with pytest.raises(ValueError, match="Received: version=-1"):
        export_prior(VAE(input_dim=4, latent_dim=2, hidden_units=[]), tmp_path, version=-1)


def test_a_model_without_a_continuous_prior_is_named(tmp_path):
    from vizoo.models import SigmoidBeliefNetwork

    with pytest.raises(ValueError, match=r"export_prior exports a continuous prior p\(z\).*SigmoidBeliefNetwork has none. "
                                         r"Received: model=SigmoidBeliefNetwork"):
        export_prior(SigmoidBeliefNetwork(input_dim=8, latent_dims=[4]), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_served_z_is_checked(tmp_path):
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(export_prior(VAE(input_dim=4, latent_dim=2, hidden_units=[]), tmp_path))
    serve = loaded.signatures["serving_default"]
    assert serve(z=tf.zeros((3, 2)))["log_pz"].shape == (3,)
    for z, message in [
        (np.zeros((3, 3)), "z must have shape \\[batch, 2\\]; received another shape"),
        (np.zeros(2), "z must have shape \\[batch, 2\\]; received another shape"),
        (np.array([[0.0, np.nan]]), "z must be finite"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(z=tf.constant(z, tf.float32))


def test_bad_path_and_overwrite_are_named(tmp_path):
    model = VAE(input_dim=4, latent_dim=2, hidden_units=[])
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="Received: overwrite='no'"):
        export_prior(model, tmp_path / "prior", overwrite="no")
    with pytest.raises(ValueError, match="Received: path=None"):
        export_prior(model, None)
    with pytest.raises(ValueError, match="it is a file"):
        export_prior(model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_version_written_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    import keras

    model = VAE(input_dim=4, latent_dim=2, hidden_units=[])
    archive_class = type(keras.export.ExportArchive())  # the backend's class
    write_out = archive_class.write_out

    def another_writer_first(archive, directory, **kwargs):  # someone else exports version 1 during our write
        (tmp_path / "prior" / "1").mkdir(parents=True)
        (tmp_path / "prior" / "1" / "theirs.txt").write_text("theirs")
        return write_out(archive, directory, **kwargs)

    monkeypatch.setattr(archive_class, "write_out", another_writer_first)
    with pytest.raises(ValueError, match="appeared while the export was written"):
        export_prior(model, tmp_path / "prior")
    assert (tmp_path / "prior" / "1" / "theirs.txt").read_text() == "theirs"
    assert sorted(p.name for p in (tmp_path / "prior").iterdir()) == ["1"]  # no temporary directory left
