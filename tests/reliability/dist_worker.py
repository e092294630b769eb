"""One QAT + calibration run, on one device or under a ``tf.distribute`` strategy.

Run as a script (a fresh process: logical devices and TF_CONFIG must be set before
TensorFlow initializes):

    python dist_worker.py MODE OUT.npz [--devices N]

MODE: ``single`` (default strategy, one CPU), ``mirrored`` (MirroredStrategy over N
logical CPUs), ``multiworker`` (MultiWorkerMirroredStrategy; TF_CONFIG from the
environment, one replica per worker process). Every mode sees the same global batches of
the real sklearn digits (8x8 images): a replica/worker gets a contiguous slice of each
global batch. The run: quantize_model -> calibrate (PTQ ranges) -> record ranges ->
fit 2 epochs of QAT (nearest rounding, so replicas are deterministic) -> record weights,
quantizer state and predictions. The parent test compares the npz files.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

GLOBAL_BATCH = 32
N_SAMPLES = 256


def _data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:N_SAMPLES, :, :, None] / 16.0).astype("float32")
    y = digits.target[:N_SAMPLES].astype("int64")
    return x, y


def _model(keras):
    init = keras.initializers.GlorotUniform(seed=1)
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=init, name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(16, activation="relu", kernel_initializer=init, name="fc1")(h)
    out = keras.layers.Dense(10, kernel_initializer=init, name="fc2")(h)
    return keras.Model(inp, out, name="digits_cnn")


def _state(qmodel) -> dict:
    """Every variable of the quantized model by name (weights and quantizer state)."""
    return {v.name: np.asarray(v.numpy()) for v in qmodel.variables}


def run(mode: str, out: str, devices: int) -> None:
    from kerasq._compat import keras, tf

    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices
        )
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    import kerasq

    x, y = _data()
    replicas = strategy.num_replicas_in_sync
    config = kerasq.QuantizationConfig(
        bitwidth_weights=6, bitwidth_activations=6, train_rounding="nearest"
    )
    with strategy.scope():
        qmodel = kerasq.quantize_model(_model(keras), config)
        qmodel.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    # Calibration: in multi-worker runs each worker calibrates on its own half of the data;
    # the ranges must still come out as the min/max over ALL of it.
    if mode == "multiworker":
        rank = int(strategy.cluster_resolver.task_id)
        per = len(x) // replicas
        calib = x[rank * per : (rank + 1) * per]
    else:
        calib = x
    calib_batch = GLOBAL_BATCH // replicas if mode == "multiworker" else GLOBAL_BATCH
    kerasq.calibrate(qmodel, calib, batch_size=calib_batch)
    calibrated = _state(qmodel)

    def dataset_fn(ctx: tf.distribute.InputContext):
        per_replica = ctx.get_per_replica_batch_size(GLOBAL_BATCH)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        first = ctx.input_pipeline_id * per_replica
        ds = ds.map(lambda a, b: (a[first : first + per_replica], b[first : first + per_replica]))
        return ds.repeat()

    if mode == "multiworker":
        data = strategy.distribute_datasets_from_function(dataset_fn)
        qmodel.fit(data, epochs=2, verbose=0, steps_per_epoch=N_SAMPLES // GLOBAL_BATCH)
    else:
        qmodel.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0)
    trained = _state(qmodel)
    predictions = qmodel.predict(x, batch_size=GLOBAL_BATCH, verbose=0)
    arrays = {"replicas": np.asarray(replicas), "predictions": predictions}
    arrays.update({"calibrated/" + k: v for k, v in calibrated.items()})
    arrays.update({"trained/" + k: v for k, v in trained.items()})
    if mode != "multiworker" or int(strategy.cluster_resolver.task_id) == 0:
        np.savez(out, **arrays)
    print("replicas", replicas, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["single", "mirrored", "multiworker"])
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    run(args.mode, args.out, args.devices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
