"""Keras callbacks for training flows."""

import json
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

    Local paths only (it uses `os.replace`); arguments as for Keras' callback.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        # Keras insists that weight files end in ".weights.h5".
        partial_weights = self._weights_path.replace(".weights.h5", ".partial.weights.h5")
        self.model.save_weights(partial_weights, overwrite=True)
        os.replace(partial_weights, self._weights_path)
        partial_metadata = self._training_metadata_path + ".partial"
        with open(partial_metadata, "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
        os.replace(partial_metadata, self._training_metadata_path)
