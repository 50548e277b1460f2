"""Every term a model's `sample_terms` can return, declared once.

Models build and check their terms from this table, losses name them in
`required_terms`, evaluation and export request them, the shared test helpers
check shapes and dtypes against it, and docs/design.md's table is checked
against it by a test. A family with a term of its own adds a row here.

A shape rule is a tuple of axis sizes: `"batch"`, `"k"` (samples per example),
`"latent_dim"` (the size of one sample z: the posterior's `latent_dim`),
`"K+1"` (a hierarchical posterior's reverse samples plus the forward one), or an int.

Kinds:
- `density`: a log-density (or a closed-form KL) of the model at the samples;
- `detached`: a copy of a density with the posterior's (or reverse model's)
  parameters stopped, same value, other gradient (STL, DReG);
- `sample`: the samples themselves;
- `state`: the model's state broadcast per example (no sample enters it);
- `extra`: a family's own term (e.g. NVIL's baselines, which the model owns).
"""

from typing import NamedTuple, Tuple

DENSITY, DETACHED, SAMPLE, STATE, EXTRA = "density", "detached", "sample", "state", "extra"
KINDS = (DENSITY, DETACHED, SAMPLE, STATE, EXTRA)


class TermSpec(NamedTuple):
    """One term: its name, shape rule, dtype, kind and meaning.

    Attributes:
        name: the key in the terms dict.
        shape: the shape rule, e.g. `("batch", "k")`.
        dtype: the dtype every model returns it in (`"float32"`: densities stay float32 under mixed precision).
        kind: one of `KINDS`.
        meaning: what it is, in one line (docs/design.md shows it).
        when: when a model computes it (docs/design.md shows it).
        detaches: for a `detached` term, the term whose value it copies (else None).
        every_model: every model gives it (log_qz: where its posterior `has_density`); other terms
            come from a family or component that declares them (`extra_terms`) or support them.
        default: `"always"`: computed on every call where the model can; `"free"`: added to a
            call with no compiled loss where the model can (it costs no extra pass); None: on request.
        bounds: `(low, high)` of its values where known (None: unbounded), e.g. a KL's `(0, None)`.
        contrast: computed (also) at fresh draws from the contrast distribution (p(z), or N(0, I) with
            adaptive contrast) that the model makes itself: noise given to `sample_terms` does not fix it.
    """

    name: str
    shape: Tuple
    dtype: str
    kind: str
    meaning: str
    when: str
    detaches: str = None
    every_model: bool = False
    default: str = None
    bounds: Tuple = (None, None)
    contrast: bool = False


TERMS = {
    spec.name: spec
    for spec in (
        TermSpec("log_px_z", ("batch", "k"), "float32", DENSITY, "log p(x | z_i)", "always", every_model=True, default="always"),
        TermSpec("log_pz", ("batch", "k"), "float32", DENSITY, "log p(z_i)", "always", every_model=True, default="always"),
        TermSpec(
            "log_qz",
            ("batch", "k"),
            "float32",
            DENSITY,
            "log q(z_i | x): exact where `posterior.exact_density`, else the family's estimate",
            "always, where the posterior `has_density`",
            every_model=True,
            default="always",
        ),
        TermSpec(
            "log_qz_detached",
            ("batch", "k"),
            "float32",
            DETACHED,
            "log q at the same z_i with q's parameters stopped (z_i keeps their gradient)",
            "a loss asks (STL, DReG); needs `posterior.has_log_prob`",
            detaches="log_qz",
        ),
        TermSpec(
            "kl",
            ("batch", 1),
            "float32",
            DENSITY,
            "closed-form KL(q(z|x) || p(z))",
            "a loss asks (`analytic_kl`); a call with no loss, where free",
            default="free",
            bounds=(0.0, None),
        ),
        TermSpec(
            "kl_per_dim",
            ("batch", "latent_dim"),
            "float32",
            DENSITY,
            "closed-form KL of each latent dimension (factorized q, N(0, I) prior)",
            "a loss asks (free bits)",
            bounds=(0.0, None),
        ),
        TermSpec(
            "z", ("batch", "k", "latent_dim"), "float32", SAMPLE, "the samples z_i", "asked for (export)", every_model=True
        ),
        TermSpec(
            "kl_weight",
            ("batch", 1),
            "float32",
            STATE,
            "the model's `kl_weight` (beta of KL warm-up), broadcast",
            "a loss asks (`kl_warmup_epochs`); every family",
            every_model=True,
            bounds=(0.0, 1.0),
        ),
        TermSpec(
            "baseline",
            ("batch", 1),
            "float32",
            EXTRA,
            "NVIL's baseline b(x) + c (the model's baseline network and running mean)",
            "a loss asks (`NVILLoss`); `SigmoidBeliefNetwork` with a baseline network",
        ),
        TermSpec(
            "signal_scale",
            ("batch", 1),
            "float32",
            EXTRA,
            "NVIL's scale max(1, sqrt(v)) of the learning signal (running variance v)",
            "a loss asks (`NVILLoss`); `SigmoidBeliefNetwork` with a baseline network",
            bounds=(1.0, None),
        ),
        TermSpec(
            "reverse_log_weights_detached",
            ("batch", "k", "K+1"),
            "float32",
            DETACHED,
            "log v_ij of the IWHVI estimate of log q, tau's density parameters stopped for j >= 1",
            "a loss asks (`IWHVILoss`, whose tau gradient is DReG unless `gradient_estimator=\"plain\"`); `HierarchicalPosterior`",
        ),
        TermSpec(
            "adversary_q",
            ("batch", "k"),
            "float32",
            EXTRA,
            "AVB's adversary T(x, z_i) at the posterior's samples (the logit of \"z_i came from q(z|x)\")",
            "a loss asks (`AVBLoss`); a model with an `adversary`",
        ),
        TermSpec(
            "adversary_p",
            ("batch", "k"),
            "float32",
            EXTRA,
            "AVB's adversary T(x, z'_i) at draws z'_i ~ p(z), the contrast",
            "a loss asks (`AVBLoss`); a model with an `adversary`",
            contrast=True,
        ),
        TermSpec(
            "adversary_q_normalized",
            ("batch", "k"),
            "float32",
            EXTRA,
            "adaptive contrast: T(x, (z_i - mu(x)) / sigma(x)), mu and sigma the sampler's moments (stopped)",
            "a loss asks (`AVBLoss(adaptive_contrast=True)`); an `adversary` and a posterior with `has_moments`",
        ),
        TermSpec(
            "adversary_p_normalized",
            ("batch", "k"),
            "float32",
            EXTRA,
            "adaptive contrast: T(x, e_i) at draws e_i ~ N(0, I), the contrast",
            "a loss asks (`AVBLoss(adaptive_contrast=True)`); an `adversary` and a posterior with `has_moments`",
            contrast=True,
        ),
        TermSpec(
            "log_rz",
            ("batch", "k"),
            "float32",
            DENSITY,
            "log r(z_i | x), r the Gaussian with the sampler's per-example mean and variance (stopped)",
            "a loss asks (adaptive contrast); a posterior with `has_moments`",
        ),
    )
}

def spec(name):
    """The `TermSpec` of term `name`; a ValueError naming it if there is none."""
    if name not in TERMS:
        raise ValueError(f"Unknown term. Expected one of {sorted(TERMS)}. Received: name={name!r}")
    return TERMS[name]


def names(kind=None):
    """Names of every term (of one kind)."""
    return tuple(name for name, term in TERMS.items() if kind is None or term.kind == kind)


def expected_shape(name, **sizes):
    """The shape of term `name` for the axis sizes given (e.g. batch=4, k=5, latent_dim=3, K=10); None for an axis not given."""
    shape = []
    for axis in spec(name).shape:
        if isinstance(axis, int):
            shape.append(axis)
            continue
        key, extra = (axis[:-2], 1) if axis.endswith("+1") else (axis, 0)
        shape.append(None if sizes.get(key) is None else sizes[key] + extra)
    return tuple(shape)


def check_term(name, value, **sizes):
    """Raise a ValueError unless `value` has the spec's rank, dtype and the shape for `sizes` (axes not given: any)."""
    term = spec(name)
    shape = tuple(value.shape)
    expected = expected_shape(name, **sizes)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        rule = "[" + ", ".join(map(str, term.shape)) + "]"
        raise ValueError(f"Term {name!r} must be shaped {rule} = {list(expected)}. Received: shape={list(shape)}")
    dtype = getattr(value.dtype, "name", str(value.dtype))
    if dtype != term.dtype:
        raise ValueError(f"Term {name!r} must be {term.dtype}. Received: dtype={dtype}")


def markdown_table():
    """The terms table of docs/design.md, generated from `TERMS` (a test keeps the page equal to it)."""

    def cell(text):
        return text.replace("|", "\\|")

    lines = ["| term | shape | dtype | kind | meaning | computed when |", "|---|---|---|---|---|---|"]
    for spec in TERMS.values():
        shape = "[" + ", ".join(map(str, spec.shape)) + "]"
        lines.append(
            f"| `{spec.name}` | `{shape}` | {spec.dtype} | {spec.kind} | {cell(spec.meaning)} | {cell(spec.when)} |"
        )
    return "\n".join(lines)
