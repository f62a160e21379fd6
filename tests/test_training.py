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


# --- compile's automatic steps per compiled call -----------------------------------------


class _EveryBatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)


def _model_and_data(n=1000):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((n, 2)).astype("float32")
    model = flows.realnvp(2, num_layers=2, hidden_units=(8,))
    model.compile(keras.optimizers.Adam(1e-3))  # Keras' call as a user writes it
    return model, x


def test_fit_runs_several_steps_per_call_by_default_on_epoch_boundaries(capsys, tmp_path):
    model, x = _model_and_data()
    model.fit(x, batch_size=100, epochs=2, verbose=1)  # 10 steps per epoch
    assert model.steps_per_execution == 10
    assert "10/10" in capsys.readouterr().out  # the progress bar ends on the epoch
    model.fit(x, batch_size=40, epochs=1, verbose=0)  # 25 steps: 5 per call
    assert model.steps_per_execution == 5
    model.fit(x, batch_size=10, epochs=1, verbose=0, validation_split=0.2)  # 80 steps
    assert model.steps_per_execution == 20
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    loaded.fit(x, batch_size=100, epochs=1, verbose=0)
    assert loaded.steps_per_execution == 10  # "auto" survives saving


def test_callbacks_that_watch_every_batch_get_every_batch():
    model, x = _model_and_data()
    watcher = _EveryBatch()
    model.fit(x, batch_size=100, epochs=1, verbose=0, callbacks=[watcher])
    assert model.steps_per_execution == 1 and watcher.batches == list(range(10))


def test_an_explicit_setting_and_unknown_lengths():
    model, x = _model_and_data()
    model.compile(keras.optimizers.Adam(1e-3), steps_per_execution=4)
    model.fit(x, batch_size=100, epochs=1, verbose=0)
    assert model.steps_per_execution == 4

    def batches():
        for i in range(5):
            yield (x[i * 100 : (i + 1) * 100],)

    model, x = _model_and_data()
    model.fit(batches(), epochs=1, verbose=0)
    assert model.steps_per_execution == 1  # a generator's length is unknown
    with pytest.raises(ValueError, match="steps_per_execution must be a positive integer"):
        model.compile("adam", steps_per_execution=0)
