"""The `kerasq demo` pipeline as a readable script: digits -> Caffe -> Keras -> quantize ->
prune -> int8 TFLite (verified). Run: python examples/demo.py [out_dir]"""

import sys

import numpy as np
from kerasq.converters.caffe import load

import kerasq
import kerasq.prune as kp
from kerasq._compat import keras
from kerasq.demo import build_cnn, load_digits_data
from kerasq.demo.caffe_writer import write_caffe
from kerasq.export import export_tflite

out = sys.argv[1] if len(sys.argv) > 1 else "kerasq-demo-out"
x_train, y_train, x_test, y_test = load_digits_data()
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

# 1. a float CNN trained on real handwritten digits
model = build_cnn()
model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)

# 2. written as a Caffe net by kerasq, and imported back
write_caffe(model, f"{out}/digits.prototxt", f"{out}/digits.caffemodel")
net = load(f"{out}/digits.prototxt", f"{out}/digits.caffemodel")

# 3. post-training quantization: dynamic fixed point, 8-bit weights and activations
ptq = kerasq.quantize_model(net)
kerasq.calibrate(ptq, x_train[:512])

# 4. quantization-aware training with 50 % of the weights pruned (zeros kept exact)
qat = kerasq.quantize_model(net, preserve_sparsity=True)
kerasq.calibrate(qat, x_train[:512])
kp.one_shot_prune(qat, kp.ConstantSparsity(0.5, 0))
qat.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
qat.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)

# 5. int8 TFLite with kerasq's power-of-two scales, run in the TFLite interpreter
result = export_tflite(qat, f"{out}/digits_int8.tflite", target="int8", verify_data=x_test)


def accuracy(m):
    return np.mean(np.argmax(m.predict(x_test, verbose=0), -1) == y_test)


print(f"float {accuracy(net):.4f}  PTQ {accuracy(ptq):.4f}  QAT+pruning {accuracy(qat):.4f}")
print(f"int8 TFLite: {result.size} bytes, {result.report.describe()}")
