"""The command line reads registries and declarations only: options come from the classes' `cli_options`."""

import ast
import os

import keras
import pytest

from tests.helpers import REPO_ROOT
from vizoo import cli
from vizoo.layers import POSTERIORS, PRIORS
from vizoo.losses import LOSSES, ELBOLoss
from vizoo.models import MODELS
from vizoo.registry import Option


def _compared_strings(path):
    """String constants compared with ==, !=, in or not in, anywhere in the file."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                    found.add(operand.value)
    return found


@pytest.mark.parametrize("path", ["vizoo/cli.py", "benchmarks/benchmark.py"])
def test_no_family_is_named_in_a_condition(path):
    names = set(MODELS) | set(LOSSES) | set(POSTERIORS) | set(PRIORS)
    named = _compared_strings(os.path.join(REPO_ROOT, path)) & names
    if path.startswith("benchmarks"):  # the benchmark's row groups pick rows by family and bound, as data
        named -= {"vae", "elbo", "iwae"}
    assert not named, f"{path} names families in conditions: {sorted(named)}"
    with open(os.path.join(REPO_ROOT, path)) as f:
        assert "inspect.signature" not in f.read()


@keras.saving.register_keras_serializable(package="vizoo_test")
class ScaledELBOLoss(ELBOLoss):
    """An ELBO loss with a declared option of its own (a stand-in for a new loss file)."""

    cli_options = {"scale": Option("--scale", float, "a test option")}

    def __init__(self, k=1, scale=1.0, **kwargs):
        super().__init__(k=k, **kwargs)
        self.scale = scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def test_a_registered_loss_gets_its_declared_flags_and_zero_is_kept(monkeypatch):
    monkeypatch.setitem(LOSSES, "scaled_elbo", ScaledELBOLoss)
    parser = cli.build_parser()
    args = parser.parse_args(["--loss", "scaled_elbo", "--scale", "0", "--analytic-kl"])
    loss = cli.build_loss(args)
    assert isinstance(loss, ScaledELBOLoss) and loss.scale == 0.0 and loss.analytic_kl  # 0 is passed, not dropped
    assert cli.build_loss(parser.parse_args(["--loss", "scaled_elbo"])).scale == 1.0  # not given: its own default
    assert "scaled_elbo" in parser.format_help()
    args = parser.parse_args(["--loss", "iwae", "--scale", "0"])
    with pytest.raises(ValueError, match=r"scale applies to the losses \['scaled_elbo'\]. Received: loss='iwae'"):
        cli._check_args(args)


def test_conflicting_declarations_of_one_flag_are_refused(monkeypatch):
    class Other(ELBOLoss):
        cli_options = {"scale": Option("--scale", int, "another type")}

    monkeypatch.setitem(LOSSES, "scaled_elbo", ScaledELBOLoss)
    monkeypatch.setitem(LOSSES, "other", Other)
    with pytest.raises(ValueError, match="--scale is declared with another type.*Received: loss='other'"):
        cli.build_parser()


def test_benchmark_rows_cover_every_reparameterization_loss():
    from tests.test_benchmarks import load_script

    rows = load_script("benchmark").MODELS
    bounds = {row[1] for row in rows.values()}
    assert {name for name, cls in LOSSES.items() if cls.requires_reparameterization} <= bounds
