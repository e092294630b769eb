"""Caffe net -> Keras -> kerasq DFP-8 PTQ -> verified int8 TFLite.

    python examples/caffe_to_tflite.py deploy.prototxt weights.caffemodel calib.npy out.tflite

``calib.npy`` holds NHWC float32 inputs (the same preprocessing as at inference).
"""

import sys

import numpy as np
from kerasq.converters.caffe import load

import kerasq
from kerasq.export import export_tflite

prototxt, caffemodel, calibration, output = sys.argv[1:5]
data = np.load(calibration).astype(np.float32)

model = load(prototxt, caffemodel)  # numerically Caffe's net, NHWC
qmodel = kerasq.quantize_model(model)  # DFP 8/8, power-of-two scales
kerasq.calibrate(qmodel, data)  # ranges -> fractional lengths
result = export_tflite(qmodel, output, target="int8", verify_data=data, verify=True)
print(f"wrote {output}: {result.size} bytes; {result.report.describe()}")
