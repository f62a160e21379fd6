"""Each example's quick mode runs from the command line; its key figures are checked."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(script, *args, timeout=600):
    # As a user runs them: without the suite's TF_CPP_MIN_LOG_LEVEL, so that the
    # examples' own quiet default is what is tested.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # TensorFlow's C++ start-up logs (cuInit on a CPU machine, oneDNN, optimizer notices)
    for noise in ("cuInit", "E0000", "oneDNN", "loop_optimizer", "cuda"):
        assert noise not in result.stderr, result.stderr[-3000:]
    return result


def _quick(script, out):
    result = _run(script, "--quick", "--out", out)
    results = json.loads((out / "results.json").read_text())
    for name in results:  # every figure is printed, not only written
        assert name in result.stdout
    return results


def test_quickstart_runs_and_reports():
    stdout = _run("quickstart.py", "--epochs", "1").stdout
    assert "samples: (1000, 2)" in stdout
    assert "reloaded from .keras: log_prob identical" in stdout
    nll = float(stdout.split("test NLL: ")[1].split()[0])
    # An untrained flow scores 1.99 nats; one epoch must improve on it, and
    # nothing can beat the data's entropy (0.29).
    assert 0.29 < nll < 1.9


@pytest.mark.parametrize(
    "script",
    [
        "distribution_mapping.py",
        "planar_sin.py",
        "generative_classification.py",
        "inverse_problem.py",
        "variational_inference.py",
        "image_generation.py",
        "anomaly_detection.py",
        "continuous_flow.py",
    ],
)
def test_help(script):
    assert "--quick" in _run(script, "--help").stdout


def test_distribution_mapping(tmp_path):
    results = _quick("distribution_mapping.py", tmp_path)
    # The flow's test log-likelihood matches the closed-form mixture's, per point.
    assert abs(results["mixture_mean_difference_per_point"]) < 0.05
    # Moons are mapped onto a standard normal: centred, unit spread; NLL near the entropy 0.29.
    assert results["moons_latent_mean_norm"] < 0.1
    assert all(0.9 < s < 1.1 for s in results["moons_latent_std"])
    assert 0.29 < results["moons_test_nll"] < 0.45
    for figure in (
        "moons_mapping.png",
        "moons_density.png",
        "mixture_density.png",
        "mixture_log_p.png",  # flow vs exact log p per test point
    ):
        assert (tmp_path / figure).stat().st_size > 10_000


def test_planar_sin(tmp_path):
    results = _quick("planar_sin.py", tmp_path)
    assert results["planar_log_det_max_error_vs_autodiff"] < 1e-4
    # Both flows learn the curve (an untrained flow scores about 2.8 nats); none beats
    # the entropy, and RealNVP does better than a few planar flows.
    entropy = results["true_entropy"]
    assert entropy < results["realnvp_test_nll"] < results["planar_test_nll"] < 1.5
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "nll.png").is_file()


def test_generative_classification(tmp_path):
    results = _quick("generative_classification.py", tmp_path)
    assert results["flow_accuracy"] >= 0.9
    assert results["logistic_regression_accuracy"] >= 0.9
    assert 0 <= results["flow_ece"] < 0.15
    # Better than a uniform density on the dequantised range (log2 17 = 4.09 bits/dim).
    assert results["flow_test_bits_per_dim_given_class"] < 3.0
    assert (tmp_path / "class_samples.png").is_file()


def test_inverse_problem(tmp_path):
    results = _quick("inverse_problem.py", tmp_path)
    for case in ("noise_free", "noisy"):
        # Posterior mean within 0.1 prior standard deviations of the analytic one,
        # covariance within 25 % (Frobenius norm), and log q within 0.15 nats of log p.
        assert results[f"{case}_posterior_mean_max_error_in_prior_sd"] < 0.1, case
        assert results[f"{case}_posterior_covariance_relative_error"] < 0.25, case
        assert abs(results[f"{case}_log_q_minus_log_p_per_signal"]) < 0.15, case
    assert (tmp_path / "posteriors.png").is_file()


def test_variational_inference(tmp_path):
    results = _quick("variational_inference.py", tmp_path)
    for energy in ("u1", "u2", "u3", "u4"):
        for family in ("planar", "realnvp"):
            # KL(q‖p) >= 0: the ELBO never exceeds the quadrature log Z (up to MC error).
            assert results[f"{energy}_{family}_kl"] > -0.02, (energy, family)
        # RealNVP gets within 0.6 nats of the target on every energy, even in quick mode.
        assert results[f"{energy}_realnvp_kl"] < 0.6, energy
        # Importance sampling with q as the proposal recovers log Z more closely.
        log_z = results[f"{energy}_log_z_quadrature"]
        assert abs(results[f"{energy}_realnvp_log_z_importance_sampled"] - log_z) < 0.35
    assert (tmp_path / "densities.png").is_file()


def test_image_generation(tmp_path):
    results = _quick("image_generation.py", tmp_path)
    # Well below a uniform density on the dequantised range (log2 17 = 4.09 bits/dim).
    assert results["uniform_bits_per_dim"] == pytest.approx(4.087, abs=1e-3)
    assert results["test_bits_per_dim"] < 3.2
    assert results["test_bits_per_dim_median"] < 3.2
    # The exact inverse: test images come back from their latents; latents look standard normal.
    assert results["reconstruction_max_abs_error"] < 1e-3
    assert 0.8 < results["latent_std"] < 1.2
    assert results["finite_samples"] is True
    for figure in ("samples.png", "reconstructions.png", "training.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
    assert (tmp_path / "model.keras").is_file()


def test_image_generation_reads_mnist_idx_files(tmp_path, write_mnist_idx):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_mnist_idx(folder, num_train=64, num_test=16)
    out = tmp_path / "out"
    stdout = _run(
        "image_generation.py",
        *("--dataset", "mnist", "--mnist-dir", folder, "--quick", "--epochs", "1"),
        *("--hidden-channels", "4", "--out", out),
    ).stdout
    results = json.loads((out / "results.json").read_text())
    assert results["uniform_bits_per_dim"] == 8.0  # 256 pixel values
    assert 0 < results["test_bits_per_dim"] < 9.0
    assert results["reconstruction_max_abs_error"] < 1e-2  # pixels in [0, 256)
    assert "glow on mnist (16 test images)" in stdout


def test_anomaly_detection(tmp_path):
    results = _quick("anomaly_detection.py", tmp_path)
    # Noise is far off the data; the unseen class and the flips are caught better than chance.
    assert results["gaussian_noise_auroc"] > 0.9
    assert results["excluded_class_0_auroc"] > 0.7
    assert results["flipped_upside_down_auroc"] > 0.5
    assert results["excluded_class_0_bits_per_dim"] > results["normal_test_bits_per_dim"]
    assert results["normal_test_images"] == 264
    for figure in ("typical.png", "scores.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


def test_continuous_flow(tmp_path):
    results = _quick("continuous_flow.py", tmp_path)
    # Flow matching improves on the untrained flow (the standardising step alone, about
    # 2 nats) in a few hundred steps; nothing beats the data's entropy.
    assert results["true_entropy"] < results["cnf_test_nll"] < 1.85
    assert results["true_entropy"] < results["nsf_test_nll"] < 1.85
    # The density is the solved map's: its log-det agrees with the autodiff Jacobian, and
    # fixed RK4 steps of the field end where the adaptive solver does.
    assert results["cnf_log_det_max_error_vs_autodiff"] < 1e-3
    assert results["rk4_trajectory_end_vs_dopri5_max_difference"] < 1e-2
    assert 0 < results["trajectory_straightness"] <= 1
    assert (tmp_path / "trajectories.png").stat().st_size > 10_000
