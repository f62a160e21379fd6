"""Keras callbacks for training flows."""

import csv
import json
import math
import os

import keras


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backup is never half-written.

    Keras writes the backup's weights file in place, so a process killed
    during that write (on a small flow an epoch is short and the write a
    large share of it) leaves a file that cannot be read, and the next run
    fails instead of resuming. Here each file is written beside its final name
    and renamed over it, which is atomic on one file system. The weights go
    first: killed between the two renames, a run keeps the new weights with
    the previous epoch number and repeats one epoch rather than skipping one.

    Under several workers (`tf.distribute.MultiWorkerMirroredStrategy`) only
    the chief writes (and at the end removes) the backup; every worker
    restores from it, so the folder must be one all workers see.

    Local paths only (it uses `os.replace`); arguments as for Keras' callback.
    """

    def _save_model(self):
        if not is_chief(self.model):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        # Keras insists that weight files end in ".weights.h5".
        partial_weights = self._weights_path.replace(".weights.h5", ".partial.weights.h5")
        self.model.save_weights(partial_weights, overwrite=True)
        os.replace(partial_weights, self._weights_path)
        partial_metadata = self._training_metadata_path + ".partial"
        with open(partial_metadata, "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
        os.replace(partial_metadata, self._training_metadata_path)

    def on_train_end(self, logs=None):
        if is_chief(self.model):
            super().on_train_end(logs)


def is_chief(model=None):
    """True unless this process is a non-chief worker of a multi-worker strategy.

    The chief (worker 0, or the "chief" task) writes checkpoints, backups and
    exports; the other workers train the same weights and write nothing.
    `model` gives the strategy (its `distribute_strategy`); by default the
    current one.
    """
    import tensorflow as tf

    strategy = model.distribute_strategy if model is not None else tf.distribute.get_strategy()
    return bool(getattr(strategy.extended, "should_checkpoint", True))


class RestoreOnNaN(keras.callbacks.Callback):
    """Stops training at a non-finite loss and restores the last good weights and optimizer state.

    Keras' `TerminateOnNaN` stops but leaves the broken (NaN) weights in the
    model. This callback keeps a copy of the weights, and of the optimizer's
    state (its moments and step count, which the bad step has made NaN too),
    from the end of the last epoch whose loss was finite (and from the start
    of training); when a batch's loss turns NaN or Inf it puts both back,
    stops training and says so. The model then trains on from there (a
    restored model with NaN optimizer moments would turn NaN at its next
    step). `stopped_at` is then (epoch, batch) and `restored_from` the epoch
    whose weights the model now has (-1: the initial weights).
    """

    # It looks at the epoch's running loss, which is NaN from the bad step on: several
    # steps per compiled call only move where it notices.
    works_with_steps_per_execution = True

    def __init__(self, verbose=True):
        super().__init__()
        self.verbose = verbose
        self.stopped_at = None
        self.restored_from = None

    def _optimizer_variables(self):
        optimizer = getattr(self.model, "optimizer", None)
        return list(optimizer.variables) if optimizer is not None else []

    def _snapshot(self, epoch):
        self._good_weights, self._good_epoch = self.model.get_weights(), epoch
        self._good_optimizer_state = [v.numpy() for v in self._optimizer_variables()]

    def on_train_begin(self, logs=None):
        self.stopped_at = self.restored_from = None
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # so that its state can be saved
        self._snapshot(-1)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        self.model.set_weights(self._good_weights)
        for variable, value in zip(self._optimizer_variables(), self._good_optimizer_state):
            variable.assign(value)
        self.model.stop_training = True
        self.stopped_at, self.restored_from = (self._epoch, batch), self._good_epoch
        if self.verbose:
            source = (
                "the initial weights"
                if self._good_epoch < 0
                else f"the weights from the end of epoch {self._good_epoch + 1}"
            )
            print(
                f"\nRestoreOnNaN: the loss became {loss} in epoch {self._epoch + 1}, "
                f"batch {batch + 1}; stopped training and restored {source} "
                "and the optimizer's state."
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_at is None and math.isfinite(float((logs or {}).get("loss", 0.0))):
            self._snapshot(epoch)


class TestSetNLL(keras.callbacks.Callback):
    """Adds the test set's mean NLL to each epoch's logs as `test_loss` (and `test_bits_per_dim`).

    Keras names whatever `validation_data` holds "val_", which is wrong when
    that is the test set, measured but never used to choose anything. Put
    this callback before `CSVLogger` (and any other logger) in the list: they
    then record the test NLL under its own name, and so does the progress bar.

    Arguments:
        x: the test data, [N, *event_shape].
        context: its contexts, for a conditional flow.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, x, context=None):
        super().__init__()
        self.x, self.context = x, context

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        log_prob = self.model.log_prob(self.x, context=self.context).numpy().astype("float64")
        nll = float(-log_prob.mean())
        logs["test_loss"] = nll
        logs["test_bits_per_dim"] = nll / (self.model.event_size * math.log(2.0))


class HistoryCSV(keras.callbacks.Callback):
    """Writes each epoch's logs as a row of a CSV file, flushed as it is written.

    Like Keras' `CSVLogger`, but with exactly the columns the logs have (Keras'
    logger adds empty "val_" columns when there is no validation data, and so
    would name a test-set column "val_test_loss"). With `append`, rows go after
    those of an earlier run, under its header.

    Arguments:
        path: the CSV file.
        append: add to an existing file instead of starting it afresh.
    """

    def __init__(self, path, append=False):
        super().__init__()
        self.path, self.append = path, append
        self._fields = None

    def on_train_begin(self, logs=None):
        self._fields = None
        if self.append and os.path.isfile(self.path):
            with open(self.path, newline="") as f:
                self._fields = next(csv.reader(f), None)
        else:
            open(self.path, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if not self._fields:
                self._fields = ["epoch", *sorted(logs)]
                writer.writerow(self._fields)
            writer.writerow(
                [epoch if field == "epoch" else _number(logs.get(field)) for field in self._fields]
            )


def _number(value):
    if value is None:
        return ""
    return repr(float(value))
