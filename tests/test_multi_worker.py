"""fit under tf.distribute.MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

The README documents the several-machines path (TF_CONFIG, chief-only writes); this runs
it for real, with two processes as two machines: both end with identical weights, equal
to one process's training on the same global batches, and only the chief writes the
backup and the export.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np

from tfp_flows import flows

GLOBAL_BATCH, NUM_POINTS, EPOCHS = 64, 256, 3  # 4 steps per epoch, 12 in all

WORKER = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG: first of all

    import keras
    import numpy as np
    from tfp_flows import flows
    from tfp_flows.callbacks import AtomicBackupAndRestore, is_chief
    from tfp_flows.export import export_saved_model

    out, global_batch, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x = np.load(os.path.join(out, "x.npy"))
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = flows.realnvp(2, num_layers=2, hidden_units=(16,))
        model.compile(keras.optimizers.Adam(1e-2))
    # The same pipeline on every worker: tf.data shards it, each takes half of each batch.
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(global_batch)

    class WatchBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # the backup exists once an epoch ends
            seen = os.path.isdir(os.path.join(out, "backup"))
            with open(os.path.join(out, f"backup_seen_{task}.txt"), "a") as f:
                f.write(f"{int(seen)}\\n")

    # Record every weights file this worker writes (the backup writes through save_weights).
    save_weights = model.save_weights

    def recorded_save_weights(path, *args, **kwargs):
        with open(os.path.join(out, f"writes_{task}.txt"), "a") as f:
            f.write(os.path.relpath(path, out) + "\\n")
        return save_weights(path, *args, **kwargs)

    model.save_weights = recorded_save_weights
    backup = AtomicBackupAndRestore(os.path.join(out, "backup"))
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[backup, WatchBackup()])
    np.savez(os.path.join(out, f"weights_{task}.npz"), *model.get_weights())
    if is_chief(model):
        export_saved_model(model, os.path.join(out, "saved_models"), "moons")
    print("DONE", task, "chief" if is_chief(model) else "worker")
""")


def _free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _single_process_weights(x):
    """What one process trains on the same global batches, from the same initial weights."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2, hidden_units=(16,))
    model.compile(keras.optimizers.Adam(1e-2))
    model.fit(tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH), epochs=EPOCHS, verbose=0)
    return model.get_weights()


def test_two_workers_train_as_one_process_and_only_the_chief_writes(tmp_path):
    x = np.random.default_rng(0).standard_normal((NUM_POINTS, 2)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    try:
        for index in range(2):
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
                "CUDA_VISIBLE_DEVICES": "",
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(tmp_path), str(GLOBAL_BATCH), str(EPOCHS)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        deadline = time.time() + 420
        outputs = []
        for process in processes:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.time())))
    finally:
        for process in processes:  # never leave a worker behind, whatever failed
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert "DONE 0 chief" in outputs[0][0] and "DONE 1 worker" in outputs[1][0]

    chief, worker = (np.load(tmp_path / f"weights_{i}.npz") for i in range(2))
    reference = _single_process_weights(x)
    assert len(chief.files) == len(reference) > 0
    for i, expected in enumerate(reference):
        # The workers apply the same all-reduced gradients: identical weights.
        np.testing.assert_array_equal(chief[f"arr_{i}"], worker[f"arr_{i}"])
        # One process on the same global batches: the same steps, up to summation order.
        np.testing.assert_allclose(chief[f"arr_{i}"], expected, rtol=1e-4, atol=1e-5)

    # Only the chief wrote the backup, once per epoch, and had it after every epoch (on a
    # disk all workers share); it removed it at the end; only the chief exported.
    writes = (tmp_path / "writes_0.txt").read_text().split()
    assert len(writes) == EPOCHS and all(w.startswith("backup/") for w in writes), writes
    assert not (tmp_path / "writes_1.txt").exists()
    seen = (tmp_path / "backup_seen_0.txt").read_text().split()  # (the other worker's view
    assert seen == ["1"] * EPOCHS, seen  # races the chief's write: not checked)
    assert not (tmp_path / "backup").exists()
    exports = sorted(p.relative_to(tmp_path) for p in (tmp_path / "saved_models").glob("*/*"))
    assert exports == [pathlib.Path("saved_models/moons/1")]
