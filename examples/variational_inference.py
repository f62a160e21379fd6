"""Variational inference: planar and RealNVP flows fitted by reverse KL to four 2D energies.

    python examples/variational_inference.py [--quick] [--out runs/examples/variational_inference]

The four energy functions U1–U4 of Rezende & Mohamed (2015) define
unnormalised targets p̃(z) = exp(−U(z)) (`tfp_flows.targets`). Each flow q
is fitted by minimising the negative ELBO E_q[log q − log p̃] with
reparameterised samples (`tfp_flows.variational.ReverseKL`). log Z is known
by quadrature on a fine grid, so the script prints the exact
KL(q‖p) = log Z − ELBO for every flow and target, and plots the normalised
targets next to the learned densities.
"""

import os

# TensorFlow's C++ start-up logs off unless you set TF_CPP_MIN_LOG_LEVEL yourself; tfp_flows
# is imported first so that it imports TensorFlow (quietly) before anything else does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfp_flows  # noqa: E402, F401, I001

import argparse

import keras

from tfp_flows import flows, plotting, targets
from tfp_flows.reports import report
from tfp_flows.variational import ReverseKL


def fit(flow, target, steps, seed, verbose, learning_rate):
    trainer = ReverseKL(flow, target, batch_size=256, seed=seed)
    epochs = min(10, steps)
    steps_per_epoch = -(-steps // epochs)
    decay = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch)
    trainer.compile(keras.optimizers.Adam(decay))
    trainer.fit(epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose)
    return trainer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about 50 s)")
    parser.add_argument("--steps", type=int, help="training steps per fit (default 3000)")
    parser.add_argument(
        "--num-planar", type=int, help="planar flows in the stack (default 32; 16 with --quick)"
    )
    parser.add_argument("--out", default="runs/examples/variational_inference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = args.steps or (300 if args.quick else 3000)
    num_planar = args.num_planar or (16 if args.quick else 32)
    num_samples, grid_size = (5000, 80) if args.quick else (20000, 150)
    verbose = 0 if args.quick else 2
    families = {
        f"planar ({num_planar})": (
            lambda: flows.planar(2, num_layers=num_planar),
            1e-2,
        ),
        "RealNVP (8)": (lambda: flows.realnvp(2, num_layers=8, hidden_units=(64, 64)), 2e-3),
    }

    results, rows = {}, []
    for name, energy in targets.ENERGIES.items():
        log_z = targets.log_normalizer_on_grid(energy)
        results[f"{name}_log_z_quadrature"] = log_z
        row = [(f"target {name.upper()}", lambda z, energy=energy, log_z=log_z: energy(z) - log_z)]
        for family, (make_flow, learning_rate) in families.items():
            keras.utils.set_random_seed(args.seed)
            trainer = fit(make_flow(), energy, steps, args.seed, verbose, learning_rate)
            elbo, _ = trainer.elbo(num_samples)
            key = family.split(" ")[0].lower()
            results[f"{name}_{key}_elbo"] = elbo
            results[f"{name}_{key}_kl"] = log_z - elbo
            results[f"{name}_{key}_log_z_importance_sampled"] = trainer.log_normalizer(num_samples)
            row.append((f"{family}: KL {log_z - elbo:.3f}", trainer.flow.log_prob))
        rows.append(row)
    plotting.plot_log_densities(
        rows,
        os.path.join(args.out, "densities.png"),
        bounds=((-4, 4), (-4, 4)),
        grid_size=grid_size,
        axis_labels=("z1", "z2"),
    )
    results["training_steps_per_fit"] = steps
    report(
        "variational inference on the energies U1-U4 (KL = log Z - ELBO, nats)", results, args.out
    )


if __name__ == "__main__":
    main()
