import importlib.util
import json
import os
import re

import numpy as np
import pytest

from tests.helpers import REPO_ROOT


def table_rows(text):
    """The cells of a Markdown table's body rows (header and separator left out)."""
    rows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return [row for row in rows[1:] if not set(row[0]) <= set("-")]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # runs the benchmark script
def test_tiny_benchmark_writes_the_table_and_resumes(tmp_path, capsys):
    benchmark = load_script("benchmark")
    argv = [
        "--dataset", "digits", "--models", "vae,iwae5", "--epochs", "1", "--eval-k", "10", "--num-test", "40",
        "--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "benchmarks.md"), "--in-process",
    ]
    assert benchmark.main(argv) == 0
    table = (tmp_path / "benchmarks.md").read_text()
    assert "| vae | diagonal | ELBO k=1 | 1 |" in table and "| iwae5 | diagonal | IWAE k=5 | 1 |" in table
    assert "python benchmarks/benchmark.py --dataset digits" in table and "cores" in table
    with open(tmp_path / "results" / "iwae5.json") as f:
        result = json.load(f)
    assert result["num_test"] == 40 and result["eval_k"] == 10
    for key in ("test_nll", "train_examples_per_second", "eval_examples_per_second", "peak_memory_mib",
                "train_matmul_fraction", "eval_matmul_fraction"):
        assert result[key] > 0, key
    # A second run skips the models that have results.
    capsys.readouterr()
    assert benchmark.main(argv) == 0
    assert capsys.readouterr().out.count("skipped") == 2


@pytest.mark.slow  # runs the benchmark script
def test_gradient_snr_reads_the_dreg_benchmark_models(tmp_path):
    results = str(tmp_path / "results")
    common = ["--dataset", "digits", "--results-dir", results]
    assert load_script("benchmark").main(
        common + ["--models", "dreg", "--epochs", "1", "--eval-k", "50", "--num-test", "20",
                  "--output", str(tmp_path / "nll.md"), "--in-process"]
    ) == 0
    output = tmp_path / "dreg.md"
    assert load_script("gradient_snr").main(common + ["--ks", "1,5", "--draws", "4", "--output", str(output)]) == 0
    report = output.read_text()
    assert "| iwae50 | IWAE k=50 | 1 |" in report and "| iwae50_dreg | IWAE k=50, dreg | 1 |" in report
    rows = [line for line in report.splitlines() if line.startswith(("| iwae50", "| untrained")) and " (" in line]
    assert len(rows) == 6  # (two trained models + untrained) x k in (1, 5)
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert float(cells[2].split()[0]) > 0 and float(cells[3].split()[0]) > 0


@pytest.mark.slow  # runs the benchmark script
def test_precision_script_compares_float32_and_bfloat16(tmp_path, capsys):
    from vizoo.losses import IWAELoss
    from vizoo.models import VAE

    model = VAE(input_dim=64, latent_dim=4, hidden_units=[16], seed=0)
    model.compile(optimizer="adam", loss=IWAELoss(k=2))
    model.fit(np.zeros((10, 64), "float32"), epochs=1, verbose=0)  # a trained model, optimizer state included
    model.save(tmp_path / "m.keras")
    argv = ["--model", str(tmp_path / "m.keras"), "--dataset", "digits", "--num-test", "20", "--eval-k", "20",
            "--train-examples", "1000", "--repeats", "1"]
    assert load_script("precision").main(argv) == 0
    output = capsys.readouterr().out
    rows = {row[0]: [float(v) for v in row[1:]] for row in table_rows(output)}
    assert set(rows) == {"float32", "mixed_bfloat16"}, output
    # (the model was trained on zeros: its NLL on the digits is only positive and finite)
    assert all(0 < nll < np.inf and eval_speed > 0 and train_speed > 0 for nll, eval_speed, train_speed in rows.values())
    difference = float(re.search(r"NLL difference \(bfloat16 - float32\): ([-+0-9.]+) nats", output).group(1))
    assert difference == pytest.approx(rows["mixed_bfloat16"][0] - rows["float32"][0], abs=2e-4) and abs(difference) < 0.5


@pytest.mark.slow  # runs the benchmark script
def test_dreg_step_time_script(capsys):
    assert load_script("dreg_step_time").main(["--k", "2", "--examples", "200", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    speeds = [float(v) for v in re.findall(r"^  (?:plain|dreg): ([0-9.]+) ex/s$", out, flags=re.M)]
    ratio = float(re.search(r"DReG / plain epoch time: ([0-9.]+)", out).group(1))
    assert len(speeds) == 2 and min(speeds) > 0 and ratio == pytest.approx(speeds[0] / speeds[1], rel=0.02), out


def test_unknown_model_is_named(tmp_path):
    with pytest.raises(SystemExit, match="Received: models='vae,gan'"):
        load_script("benchmark").main(["--models", "vae,gan", "--results-dir", str(tmp_path)])


@pytest.mark.slow  # runs the benchmark script
def test_ppca_full_covariance_table(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["ppca_full_covariance.py", "--steps", "30"])
    load_script("ppca_full_covariance").main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 4
    for row in rows:  # every setting starts below log p(x) and trains towards it
        start, *_, end = (float(cell) for cell in row.strip("| ").split(" | ")[2:])
        assert 0 < end < start


def test_vs_pythae_needs_a_pythae_python(capsys, monkeypatch):
    monkeypatch.delenv("PYTHAE_PYTHON", raising=False)
    with pytest.raises(SystemExit, match="--pythae-python.*Received: none"):
        load_script("vs_pythae").main([])
    with pytest.raises(SystemExit, match="--repeats must be an integer >= 1. Received: 0"):
        load_script("vs_pythae").main(["--pythae-python", "python", "--repeats", "0"])
    shapes = load_script("vs_pythae").matmul_shapes(batch=100, k=5, chunk_rows=2600)
    assert (500, 200, 784) in shapes["train"] and (2600, 200, 784) in shapes["eval"] and (100, 784, 200) in shapes["train"]


@pytest.mark.slow  # runs the benchmark script
def test_softplus_sum_benchmark_prints_its_table(capsys):
    assert load_script("softplus_sum").main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = {row[0]: [float(v) for v in row[1:]] for row in table_rows(out)}
    assert set(rows) == {"softplus per pixel", "grouped (vizoo)"}, out
    for error, step_ms, eval_speed in rows.values():  # both within float32 summation error of float64
        assert 0 <= error < 1e-3 and step_ms > 0 and eval_speed > 0
    assert re.search(r"training step [0-9.]+x as fast, evaluation [0-9.]+x", out), out
    from vizoo.layers import BernoulliLikelihood

    assert "sum_softplus" in BernoulliLikelihood.log_prob.__code__.co_names  # the script put it back


@pytest.mark.slow  # runs the benchmark script
def test_step_variants_prints_each_variant(capsys):
    from vizoo.models import VAE

    decode, own = VAE.decode, "decode" in VAE.__dict__
    assert load_script("step_variants").main(["--rounds", "1", "--hidden-units", "16", "--latent-dim", "4", "--steps-per-call", "2", "--eval-k", "20"]) == 0
    out = capsys.readouterr().out
    rows = {row[0]: row[1:] for row in table_rows(out)}
    assert set(rows) == {"vizoo", "3-D decoder", "Keras Adam", "XLA step"}, out
    assert all(float(ms) > 0 for ms, _ in rows.values()) and rows["vizoo"][1] == "1.00x the time"
    first, second = (float(v) for v in re.search(r"first call on a model ([0-9.]+) s, second call ([0-9.]+) s", out).groups())
    assert first > 0 and second > 0
    assert VAE.decode is decode and ("decode" in VAE.__dict__) == own  # the script put vizoo's decode back, where it was


@pytest.mark.slow  # trains four small runs
def test_long_run_resumes_an_interrupted_row_and_reports_curves_seeds_and_orderings(tmp_path, monkeypatch):
    import vizoo

    long_run = load_script("long_run")
    results, output = tmp_path / "results", tmp_path / "docs" / "long.md"
    common = ["--dataset", "digits", "--epochs", "2", "--curve-every", "1", "--curve-examples", "20", "--curve-k", "10",
              "--eval-k", "20", "--results-dir", str(results), "--output", str(output), "--in-process"]
    argv = common + ["--models", "vae,iwae5", "--seeds", "0"]
    evaluate, calls = vizoo.evaluate.log_likelihood, []

    def interrupted_at_the_second_curve_point(*args, **kwargs):  # Ctrl-C during epoch 2's test point (vae, seed 0)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(vizoo.evaluate, "log_likelihood", interrupted_at_the_second_curve_point)
    with pytest.raises(vizoo.runs.RunInterrupted):
        long_run.main(argv)
    first = results / "e2" / "vae" / "seed0"
    assert [row["epoch"] for row in long_run._read_csv(str(first / "progress.csv"))] == ["1"]
    assert not (first / "result.json").exists() and vizoo.runs.checkpoint_epoch(str(first)) == 1
    long_run.write_report(long_run.build_parser().parse_args(argv))  # epoch 2's history row is not counted
    assert "| vae | 0 | | | | 1 of 2: not finished | test NLL" in output.read_text()

    monkeypatch.setattr(vizoo.evaluate, "log_likelihood", evaluate)
    assert long_run.main(argv + ["--train-only"]) == 0  # resumes vae seed 0 at epoch 2, trains iwae5, evaluates neither
    assert not (first / "result.json").exists() and vizoo.runs.checkpoint_epoch(str(first)) == 2
    assert "| vae | 0 | | | | 2 of 2: trained, not yet evaluated |" in output.read_text()
    assert long_run.main(argv) == 0  # evaluates both
    assert long_run.main(common + ["--models", "vae", "--seeds", "1"]) == 0  # a second seed of the vae
    progress = long_run._read_csv(str(first / "progress.csv"))
    assert [row["epoch"] for row in progress] == ["1", "2"] and all(row["test_nll"] for row in progress)
    assert len(long_run._read_csv(str(first / "history.csv"))) == 2 and not (first / "checkpoint").exists()
    with open(first / "result.json") as f:
        result = json.load(f)
    assert result["epochs"] == 2 and result["eval_k"] == 20 and result["num_test"] == 300 and result["is_bound"]

    report = output.read_text()
    rows = {tuple(row[:2]): row for row in table_rows(report.split("## Seed spread")[0])}
    assert set(rows) == {("vae", "0"), ("vae", "1"), ("iwae5", "0")}
    assert all(row[5] == "2" and float(row[6]) > 0 for row in rows.values())
    spread = {row[0]: row for row in table_rows(report.split("## Seed spread")[1].split("## The published")[0])}
    nll = {"vae": [float(rows[("vae", s)][6]) for s in ("0", "1")], "iwae5": [float(rows[("iwae5", "0")][6])]}
    assert float(spread["vae"][3]) == pytest.approx(np.mean(nll["vae"]), abs=0.01)
    assert float(spread["vae"][4]) == pytest.approx(np.std(nll["vae"], ddof=1), abs=0.01)
    ordering = [row for row in table_rows(report) if row[0].startswith("IWAE k=5 over the VAE")]
    assert len(ordering) == 1 and float(ordering[0][4]) == pytest.approx(np.mean(nll["vae"]) - nll["iwae5"][0], abs=0.011)
    assert ordering[0][2].endswith("(1 seed)") and ordering[0][3].endswith("(2 seeds)")
    assert (output.parent / "long_e2_bounds.png").stat().st_size > 1000
    curves = long_run._read_csv(str(output.parent / "long_curves.csv"))  # beside the page
    assert len(curves) == 3 * 2 and {row["model"] for row in curves} == {"vae", "iwae5"}
    # Everything finished: a third run trains nothing, and rewrites the page keeping what was written below the marker.
    output.write_text(report + "\n" + long_run.benchmark.KEPT_MARKER + "\n## Findings\n\nwritten by hand\n")
    assert long_run.main(argv) == 0
    assert output.read_text().endswith(long_run.benchmark.KEPT_MARKER + "\n## Findings\n\nwritten by hand\n")

    # AIS beside importance sampling (benchmarks/long_ais.py), saved beside each row's model; a row without its
    # k=--eval-k evaluation is then compared by AIS on the same test images.
    ais_argv = ["--models", "vae,iwae5", "--epochs", "2", "--dataset", "digits", "--examples", "5", "--steps", "3",
                "--chains", "2", "--k", "10", "--results-dir", str(results)]
    assert load_script("long_ais").main(ais_argv) == 0
    with open(first / "ais-n5-steps3-chains2.json") as f:
        saved = json.load(f)
    assert len(saved["per_example"]["ais_log_likelihood"]) == 5 and len(saved["per_example"]["is_log_likelihood"]) == 5
    assert saved["ais_nll"] == pytest.approx(-np.mean(saved["per_example"]["ais_log_likelihood"]), abs=1e-4)
    (results / "e2" / "iwae5" / "seed0" / "result.json").unlink()  # as if importance sampling had failed for it
    long_run.write_report(long_run.build_parser().parse_args(argv))
    report = output.read_text()
    assert "| iwae5 | 0 | | | | 2 of 2: trained, measured by AIS (below) |" in report
    checks = table_rows(report.split("## Beside importance sampling: AIS")[1].split("## ")[0])
    assert [row[:4] for row in checks] == [["vae", "2", "0", "5"], ["iwae5", "2", "0", "5"]]
    [ordering] = [row for row in table_rows(report) if row[0].startswith("IWAE k=5 over the VAE")]
    with open(results / "e2" / "iwae5" / "seed0" / "ais-n5-steps3-chains2.json") as f:
        iwae5 = json.load(f)
    assert ordering[2] == f"iwae5 {iwae5['ais_nll']:.2f} (AIS)" and ordering[3] == f"vae {saved['ais_nll']:.2f} (AIS)"
    assert float(ordering[4]) == pytest.approx(saved["ais_nll"] - iwae5["ais_nll"], abs=0.006)
    assert "by AIS on the first 5 test images, 3 steps x 2 chains" in ordering[6]


def test_orderings_compare_paired_seeds_or_one_seed_against_the_borrowed_spread():
    from scipy import stats

    long_run = load_script("long_run")

    def runs(**nlls):  # {(epochs, row, seed): run} with finished results
        return {(100, name, seed): {"result": {"test_nll": value}, "history": []} for name, values in nlls.items()
                for seed, value in enumerate(values)}

    def ordering(rows, source):
        return [row for row in rows if row[0].startswith(source)]

    # IWAE-5 against the VAE, three seeds each: seed by seed (differences 1.0, 1.1, 1.2).
    vae, iwae5 = [240.0, 240.2, 240.4], [239.0, 239.1, 239.2]
    [row] = ordering(long_run.orderings(runs(vae=vae, iwae5=iwae5), noise=0.5), "IWAE k=5 over the VAE")
    error = np.std([1.0, 1.1, 1.2], ddof=1) / np.sqrt(3)
    assert row[:4] == ("IWAE k=5 over the VAE (Burda et al. 2016, table 1)", 100, "iwae5 239.10 (3 seeds)", "vae 240.20 (3 seeds)")
    assert row[4] == pytest.approx(1.1) and row[5] == pytest.approx(error)
    critical = stats.t.ppf(0.975, 2)
    assert row[6] == f"holds (paired over 3 seeds: t = {1.1 / error:.1f}, 95% needs {critical:.1f})"
    level = ordering(long_run.orderings(runs(vae=vae, iwae5=vae), noise=0.5), "IWAE k=5 over the VAE")[0]
    assert level[4] == 0.0 and level[6].startswith("within seed noise (paired over 3 seeds: t = 0.0")
    noisy = ordering(long_run.orderings(runs(vae=vae, iwae5=[239.0, 240.3, 239.2]), noise=0.5), "IWAE k=5 over the VAE")[0]
    assert noisy[6].startswith("within seed noise (paired over 3 seeds")
    # One seed each: the measured noise stands in for both spreads, and the verdict says so.
    by_gain = {gain: ordering(long_run.orderings(runs(sbn_nvil=[250.0], sbn_vimco5=[250.0 - gain]), noise=0.3),
                              "VIMCO over NVIL")[0] for gain in (1.0, 0.5, -0.5, -1.0)}
    assert all(row[5] == pytest.approx(0.3 * np.sqrt(2)) for row in by_gain.values())
    assert [by_gain[g][6].split(" (")[0].split(":")[0] for g in (1.0, 0.5, -0.5, -1.0)] == [
        "holds on one seed", "within seed noise", "within seed noise", "reversed on one seed"]
    assert by_gain[1.0][6] == f"holds on one seed: {1.0 / (0.3 * np.sqrt(2)):.1f} borrowed standard errors"
    [row] = ordering(long_run.orderings(runs(sbn_nvil=[250.0], sbn_vimco5=[251.0]), noise=None), "VIMCO over NVIL")
    assert row[5] is None and row[6] == "does not hold (seed spread not measured)"
    # A row without its partner: every ordering is listed, as not measured yet.
    rows = long_run.orderings(runs(vae=vae), noise=0.5)
    assert len(rows) == len(long_run.ORDERINGS) and all(row[4] is None for row in rows)
    assert ordering(rows, "IWAE k=5 over the VAE")[0][6] == "not measured yet (iwae5 not started; vae finished)"


def test_a_row_whose_importance_sampling_ais_shows_loose_is_compared_by_ais():
    long_run = load_script("long_run")
    vae_ais, avb_ais = [-225.0, -226.0, -224.0, -225.0], [-227.0, -228.2, -225.8, -227.0]  # AVB 2.0 behind

    def check(values, is_nll):
        return {"examples": len(values), "ais_steps": 500, "ais_chains": 8, "ais_nll": -np.mean(values),
                "is_nll": is_nll, "per_example": {"ais_log_likelihood": values}}

    runs = {(100, "vae", 0): {"result": {"test_nll": 236.0}, "history": [], "checks": [check(vae_ais, 225.5)]},
            (100, "avb", 0): {"result": {"test_nll": 235.0}, "history": [], "checks": []}}
    [row] = [row for row in long_run.orderings(runs, noise=0.3) if row[2].startswith("avb")]
    assert row[2] == "avb 235.00 (1 seed)"  # no evidence against its importance sampling: read as it is
    # Importance sampling 5.0 nats above AIS on the same images: its 235.0 is not read; by AIS, AVB is behind.
    runs[(100, "avb", 0)]["checks"] = [check(avb_ais, 232.0)]
    assert long_run.importance_sampling_fails(runs[(100, "avb", 0)])
    assert not long_run.importance_sampling_fails(runs[(100, "vae", 0)])  # 0.5 nats: within LOOSE_NATS
    [row] = [row for row in long_run.orderings(runs, noise=0.3) if row[2].startswith("avb")]
    paired = np.std(np.subtract(avb_ais, vae_ais), ddof=1) / 2
    assert row[2:5] == ("avb 227.00 (AIS)", "vae 225.00 (AIS)", pytest.approx(-2.0))
    assert row[5] == pytest.approx(np.sqrt(2 * 0.3**2 + paired**2))
    assert row[6].startswith("not shown by AIS on the first 4 test images, 500 steps x 8 chains (")
    assert row[6].endswith(": avb behind by at most about 2.0 nats (AIS overestimates an NLL, more from a poor start)")


def test_vs_pythae_quality_checks_its_flags_and_reads_pythae_weights_in_vizoo_layout(tmp_path):
    import vizoo

    quality = load_script("vs_pythae_quality")
    with pytest.raises(SystemExit, match="--pythae-python.*Received: none"):
        quality.main(["--pythae-python", ""])
    with pytest.raises(SystemExit, match="--epochs must be.*positive.*Received: '10,0'"):
        quality.main(["--pythae-python", "python", "--epochs", "10,0"])
    with pytest.raises(SystemExit, match="--checkpoint-every must be a positive integer. Received: 0"):
        quality.main(["--pythae-python", "python", "--checkpoint-every", "0", "--results-dir", str(tmp_path)])

    # A model written in the worker's layout (Keras [in, out] kernels, log sigma) loads into a twin unchanged.
    source, twin = (vizoo.models.VAE(6, 2, [5, 4], seed=s) for s in (1, 2))
    for model in (source, twin):
        model.build((None, 6))
    layout = {}
    for prefix, layers in (("encoder", source.encoder_layers), ("decoder", source.decoder_layers)):
        for i, layer in enumerate(layers):
            layout[f"{prefix}_{i}_kernel"], layout[f"{prefix}_{i}_bias"] = layer.get_weights()
    for name, layer in (("loc", source.posterior.loc_layer), ("log_scale", source.posterior.log_scale_layer),
                        ("logits", source.likelihood.logits_layer)):
        layout[f"{name}_kernel"], layout[f"{name}_bias"] = layer.get_weights()
    np.savez(tmp_path / "w.npz", **layout)
    quality.load_vizoo_layout(twin, str(tmp_path / "w.npz"))
    for a, b in zip(source.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    quality.torch_like_init(twin, seed=0)  # PyTorch's bounds: +-1/sqrt(fan_in), biases too
    kernel, bias = twin.encoder_layers[0].get_weights()
    assert np.abs(kernel).max() <= 1 / np.sqrt(6) and np.abs(bias).max() <= 1 / np.sqrt(6) and np.abs(bias).max() > 0

    results = [{"variant": "defaults", "epochs": 10, "seed": s, "vizoo_nll": v, "pythae_nll": p, "vizoo_kl": 1.0,
                "pythae_kl": 1.0, "vizoo_active_units": 20, "pythae_active_units": 21}
               for s, v, p in ((0, 250.0, 249.0), (1, 251.0, 251.5))]
    rows = table_rows(quality.report(results))
    assert rows[-1][2] == "mean of 2" and rows[-1][5] == f"+0.25 (sd {np.std([1.0, -0.5], ddof=1):.2f})"

    # The long-run page reports them beside the long runs (and says nothing without results).
    long_run = load_script("long_run")
    assert long_run.pythae_section(str(tmp_path / "none")) == []
    (tmp_path / "pythae").mkdir()
    for result in results:
        (tmp_path / "pythae" / f"defaults_seed{result['seed']}_e10.json").write_text(json.dumps(result))
    section = "\n".join(long_run.pythae_section(str(tmp_path / "pythae")))
    assert section.startswith("## Against pythae at equal budget") and "python benchmarks/vs_pythae_quality.py" in section
    assert table_rows(section) == rows


def test_benchmark_table_keeps_the_text_below_its_marker(tmp_path):
    benchmark = load_script("benchmark")
    results = tmp_path / "results"
    results.mkdir()
    result = {
        "model": "vae", "posterior": "diagonal", "loss": "ELBO k=1", "epochs": 1, "test_nll": 250.0, "test_elbo": -255.0,
        "test_iwae_k": -255.0, "test_kl": 13.0, "active_units": 10, "latent_units": 50, "train_examples_per_second": 1.0,
        "eval_examples_per_second": 1.0, "peak_memory_mib": 1.0, "train_gflops": 1.0, "matmul_gflops_train_shape": 1.0,
        "train_matmul_rows": 100, "train_matmul_fraction": 1.0, "eval_gflops": 1.0, "matmul_gflops_eval_shape": 1.0,
        "eval_matmul_rows": 100, "eval_matmul_fraction": 1.0, "machine": "m", "date": "d", "dataset": "s",
        "num_test": 1, "eval_k": 1,
    }
    (results / "vae.json").write_text(json.dumps(result))
    output = tmp_path / "out.md"
    benchmark.write_table(str(results), str(output), "cmd")
    assert benchmark.KEPT_MARKER not in output.read_text()
    kept = f"{benchmark.KEPT_MARKER}\n\n## Written by hand\n\nkept\n"
    output.write_text(output.read_text() + "\n" + kept)
    benchmark.write_table(str(results), str(output), "cmd2")
    text = output.read_text()
    assert text.endswith(kept) and text.count(benchmark.KEPT_MARKER) == 1 and "    cmd2" in text and "| vae |" in text


def test_active_units_table_reads_the_per_epoch_csvs(tmp_path):
    active_units = load_script("active_units")
    fields = ["epoch", "elbo", "kl", "active_units", "slack"] + [f"kl_u{u:02d}" for u in range(active_units.LATENT_DIM)]
    lines = [",".join(fields)]
    for epoch in range(1, 7):  # unit u has KL 0.02 * (u < 12 - epoch): 11, 10, ... units above 0.01
        kl_units = [0.02 if u < 12 - epoch else 0.001 for u in range(active_units.LATENT_DIM)]
        lines.append(",".join(map(str, [epoch, -250.0 + epoch, 13.0, 50 - epoch, "nan" if epoch < 3 else 0.5, *kl_units])))
    (tmp_path / "hvm.csv").write_text("\n".join(lines) + "\n")
    rows = table_rows(active_units.table(["hvm", "diagonal"], str(tmp_path)))  # diagonal.csv absent: left out
    assert rows == [
        ["hvm", "1", "-249.00", "13.00", "49/50", "11", "-"],
        ["hvm", "5", "-245.00", "13.00", "45/50", "7", "0.500"],
        ["hvm", "6", "-244.00", "13.00", "44/50", "6", "0.500"],
    ]


def test_avb_settings_checks_its_flags():
    script = load_script("avb_settings")
    with pytest.raises(SystemExit, match=r"--variants must name some of .*Received: 'paper_lr,nope'"):
        script.main(["--variants", "paper_lr,nope"])
    with pytest.raises(SystemExit, match="--curve-every must be a positive integer. Received: 0"):
        script.main(["--curve-every", "0"])
    assert set(script.VARIANTS) == {"long_run", "paper_lr", "two_adversary_steps"}


def test_long_ais_checks_its_flags():
    with pytest.raises(SystemExit, match="--chains must be a positive integer. Received: 0"):
        load_script("long_ais").main(["--chains", "0"])


def test_vamp_prior_speed_checks_its_flags():
    with pytest.raises(SystemExit, match="--components must be a positive integer. Received: 0"):
        load_script("vamp_prior_speed").main(["--components", "0"])
