"""The shared training recipes: steps per compiled call, fitting on dequantised counts."""

import keras
import numpy as np
import pytest

from tfp_flows import flows
from tfp_flows.training import fit_dequantized, steps_per_call


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 12, 40, 39, 100])
def test_steps_per_call_is_the_largest_divisor_up_to_ten(steps_per_epoch):
    steps = steps_per_call(steps_per_epoch)
    assert steps_per_epoch % steps == 0 and 1 <= steps <= 10
    assert not any(steps_per_epoch % d == 0 for d in range(steps + 1, 11))


def test_fit_dequantized_trains_on_fresh_noise_and_ends_epochs_on_calls():
    keras.utils.set_random_seed(0)
    counts = np.random.default_rng(0).integers(0, 4, (300, 2))  # 3 steps of 128 per epoch
    model = flows.realnvp(2, num_layers=2)
    history = fit_dequantized(model, counts, epochs=4, batch_size=128, verbose=0)
    assert model.steps_per_execution == 3
    losses = history.history["loss"]
    assert len(losses) == 4 and np.isfinite(losses).all() and losses[-1] < losses[0]
    # The learning rate decays along a cosine to 0 over the 12 steps.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
