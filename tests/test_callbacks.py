import keras
import numpy as np

from tfp_flows import datasets, flows
from tfp_flows.callbacks import RestoreOnNaN


class PoisonAt(keras.callbacks.Callback):
    """Sets one weight to NaN after a given batch of a given epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.when, self.epoch = (epoch, batch), 0
        self.snapshot = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.when[0] - 1:
            self.snapshot = self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.when:
            weight = self.model.trainable_weights[0]
            weight.assign(np.full(weight.shape, np.nan, weight.dtype))


def test_restore_on_nan_restores_the_last_good_epoch_and_stops(capsys):
    data = datasets.load("moons", num_train=1024, num_test=10, seed=0)
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-3))
    poison, guard = PoisonAt(epoch=2, batch=1), RestoreOnNaN()
    history = model.fit(data.train, batch_size=256, epochs=6, verbose=0, callbacks=[poison, guard])
    # Poisoned after batch 1 of epoch 2: the NaN shows from batch 2 on (Keras
    # may report a step's logs one step late).
    assert guard.stopped_at[0] == 2 and guard.stopped_at[1] >= 2
    assert guard.restored_from == 1
    assert len(history.history["loss"]) == 3  # stopped during the third epoch
    for restored, good in zip(model.get_weights(), poison.snapshot):
        np.testing.assert_array_equal(restored, good)
    assert np.isfinite(model.log_prob(data.test)).all()
    assert "restored the weights from the end of epoch 2" in capsys.readouterr().out


def test_restore_on_nan_in_the_first_epoch_restores_the_initial_weights():
    data = datasets.load("moons", num_train=512, num_test=10, seed=0)
    model = flows.planar(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-3))
    initial = model.get_weights()
    guard = RestoreOnNaN(verbose=False)
    model.fit(
        data.train,
        batch_size=128,
        epochs=2,
        verbose=0,
        callbacks=[PoisonAt(epoch=0, batch=0), guard],
    )
    assert guard.restored_from == -1
    for restored, start in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(restored, start)


def test_a_model_restored_after_nan_trains_on_and_saves_well(tmp_path):
    # The bad step makes the optimizer's moments NaN too: RestoreOnNaN restores them with
    # the weights, so the next fit (here of the saved and reloaded model) stays finite.
    data = datasets.load("moons", num_train=1024, num_test=10, seed=0)
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2)
    model.compile(keras.optimizers.Adam(1e-3))
    guard = RestoreOnNaN(verbose=False)
    model.fit(
        data.train,
        batch_size=256,
        epochs=4,
        verbose=0,
        callbacks=[PoisonAt(epoch=1, batch=1), guard],
    )
    assert guard.restored_from == 0
    assert all(np.isfinite(v.numpy()).all() for v in model.optimizer.variables)
    model.save(tmp_path / "restored.keras")
    for trained in (model, keras.models.load_model(tmp_path / "restored.keras")):
        history = trained.fit(data.train, batch_size=256, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert all(np.isfinite(w).all() for w in trained.get_weights())
