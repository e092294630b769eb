"""Seeded stochastic rounding in a fresh process with a given TF thread configuration.

    python seeded_worker.py OUT.npz INTRA_THREADS INTER_THREADS

Writes: stochastic DFP rounding through the TF path, the numpy path and the C++ op (if
built), all with seed 1234; and the weights after 3 QAT steps with stochastic weight
rounding (global seed set by ``keras.utils.set_random_seed``) on real digits.
"""

from __future__ import annotations

import sys

import numpy as np


def main(out: str, intra: int, inter: int) -> None:
    from kerasq._compat import keras, tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    import kerasq
    from kerasq import numerics

    x = np.random.default_rng(7).standard_normal(200_000).astype(np.float32)
    arrays = {
        "tf": np.asarray(
            numerics.dfp_quantize(tf.constant(x), 8, 5, rounding="stochastic", seed=1234)
        ),
        "numpy": np.asarray(numerics.dfp_quantize(x, 8, 5, rounding="stochastic", seed=1234)),
    }
    from kerasq.ops import fake_quant  # the C++ kernel (or its fallback if not built)

    arrays["cpp_op"] = np.asarray(
        fake_quant.fake_quant_dfp(tf.constant(x), 8, 5, rounding="stochastic", seed=1234)
    )

    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:128, :, :, None] / 16.0).astype("float32")
    labels = digits.target[:128]
    keras.utils.set_random_seed(99)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(10)(h))
    qmodel = kerasq.quantize_model(
        model, kerasq.QuantizationConfig(bitwidth_weights=4, train_rounding="stochastic")
    )
    qmodel.compile(
        keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(images, labels, batch_size=32, epochs=1, steps_per_epoch=3, shuffle=False,
               verbose=0)
    for v in qmodel.trainable_variables:
        arrays["qat/" + v.name] = v.numpy()
    arrays["qat/predictions"] = qmodel.predict(images, verbose=0)
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
