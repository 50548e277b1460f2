"""Registration by decorator: each piece registers itself in its own file; packages import every module."""

import pytest

from vizoo.registry import LOSSES, MODELS, POSTERIORS, PRIORS, Option, Registry, declared_options


def test_every_shipped_piece_is_registered_from_its_own_file():
    from vizoo import layers, losses, models

    assert {"elbo", "iwae", "hvm", "iwhvi", "vimco", "nvil"} <= set(LOSSES)
    assert {"diagonal", "full_covariance", "iaf", "planar", "radial", "hierarchical"} <= set(POSTERIORS)
    assert {"standard_normal", "mixture", "vamp", "maf"} <= set(PRIORS)
    assert {"vae", "sbn"} <= set(MODELS)
    assert losses.LOSSES is LOSSES and layers.POSTERIORS is POSTERIORS and models.MODELS is MODELS
    for registry, package in ((LOSSES, losses), (POSTERIORS, layers), (PRIORS, layers), (MODELS, models)):
        for name, cls in registry.items():
            assert cls.registered_name == name and registry.name_of(cls) == name
            assert getattr(package, cls.__name__) is cls and cls.__name__ in package.__all__


def test_a_name_is_registered_once():
    registry = Registry("widget")

    @registry.register("a")
    class A:
        pass

    assert registry.register("a")(A) is A  # the same class again (a re-import) is fine
    with pytest.raises(ValueError, match="The widget name 'a' is taken by .*A. Received: name='a'"):

        @registry.register("a")
        class B:
            pass

    with pytest.raises(ValueError, match="Received: name=''"):
        registry.register("")


def test_declared_options_merge_along_the_bases():
    class Base:
        cli_options = {"steps": Option("--steps", int, "steps")}

    class Child(Base):
        cli_options = {"width": Option("--width", int, "width", nargs="+")}

    assert set(declared_options(Child)) == {"steps", "width"}
    assert declared_options(Child)["width"].dest == "width" and Option("--a-b", int, "").dest == "a_b"
