import pytest

from vizoo.export import export_prior
from vizoo.models import VAE

# The exported densities are served without vizoo in tests/export/test_serving.py.


def test_bad_version_is_named(tmp_path):
    with pytest.raises(ValueError, match="Received: version=-1"):
        export_prior(VAE(input_dim=4, latent_dim=2, hidden_units=[]), tmp_path, version=-1)
