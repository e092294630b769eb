"""SSD export: backbone + float decode/NMS in one TFLite file (kerasq.export.detection).

References: the TFLite interpreter running the file against the Keras model (detections
compared as sets), and, for the float file of the converted net, OpenCV's Caffe-SSD
DetectionOutput directly.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

CAFFE_TESTS = pathlib.Path(__file__).resolve().parents[1] / "converters" / "caffe"
sys.path.insert(0, str(CAFFE_TESTS))
from test_ssd import VARIANTS, _dense, assert_same_detections, explicit_clip, ssd_net


@pytest.fixture(scope="module")
def ssd(tmp_path_factory):
    from kerasq.converters.caffe import load

    shape, priors, det = VARIANTS["flip-max-center"]
    nb = ssd_net(shape, priors, det)
    proto, weights = nb.write(tmp_path_factory.mktemp("ssd"))
    model = load(proto, weights)
    x = np.random.RandomState(0).uniform(-1, 1, (6,) + shape[1:]).astype(np.float32)
    return model, proto, weights, x, det


def _table(out, image_ids=None):
    """The fixed outputs as Caffe rows (image, label, score, box)."""
    rows = []
    for i, n in enumerate(out["num_detections"]):
        for j in range(int(n)):
            rows.append(
                [i if image_ids is None else image_ids[i], out["detection_classes"][i, j],
                 out["detection_scores"][i, j], *out["detection_boxes"][i, j]]
            )  # fmt: skip
    return np.array(rows, np.float32).reshape(-1, 7)


def test_float_file_gives_opencv_detections(ssd):
    """The float file of the converted net: its detections are OpenCV's (Caffe-SSD)."""
    from kerasq.export import detection
    from kerasq.export.tflite import export_tflite

    model, proto, weights, x, det = ssd
    result = export_tflite(model, target="float", verify_data=x.transpose(0, 2, 3, 1), verify=True)
    assert result.report.ok and result.report.detections > 0
    got = detection.run_tflite(result.content, x.transpose(0, 2, 3, 1))
    assert set(got) == set(detection.OUTPUT_NAMES + detection.HEAD_NAMES)
    m = det["keep_top_k"]
    assert got["detection_boxes"].shape == (len(x), m, 4)
    assert got["detection_classes"].dtype == np.int32
    cv_proto = pathlib.Path(proto).with_name("opencv.prototxt")
    cv_proto.write_text(explicit_clip(pathlib.Path(proto).read_text()))
    net = cv2.dnn.readNetFromCaffe(str(cv_proto), weights)
    net.setInput(x, "data")
    want = _dense(net.forward("detection_out"))
    assert_same_detections(_table(got), want, "tflite float vs OpenCV", m)
    # rows past the count are zero
    n = got["num_detections"]
    for i in range(len(x)):
        assert not got["detection_scores"][i, n[i] :].any()


def test_int8_file_detections_equal_the_keras_model(ssd):
    """int8 backbone (kerasq's grids, no float op in it) + float post-processing."""
    import kerasq
    from kerasq.export import detection
    from kerasq.export.tflite import check_integer_file, export_tflite
    from kerasq.export.verify import op_table

    model, _, _, x, _ = ssd
    nhwc = x.transpose(0, 2, 3, 1)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), nhwc)
    result = export_tflite(qmodel, target="int8", representative_data=nhwc, verify=True)
    assert result.report.ok and result.report.detections > 0
    assert check_integer_file(result.content, result.plan, "int8") == []
    ops = {op["op"] for op in op_table(result.content)}
    assert {"CONV_2D", "WHILE"} <= ops
    # the file's fixed outputs against the quantized Keras model's Caffe table
    got = _table(detection.run_tflite(result.content, nhwc))
    want = np.asarray(qmodel(nhwc, training=False))[0, 0]
    report = detection.compare_detections(
        detection.run_tflite(result.content, nhwc), detection.keras_detections(qmodel, nhwc)
    )
    assert report.ok
    assert len(got) == len(want)


def test_eta_below_one_is_refused_for_tflite(tmp_path):
    from kerasq.converters.caffe import load

    from kerasq.errors import ExportError
    from kerasq.export.tflite import export_tflite

    shape, priors, det = VARIANTS["encoded-variance-eta"]
    proto, weights = ssd_net(shape, priors, det).write(tmp_path)
    with pytest.raises(ExportError) as info:
        export_tflite(load(proto, weights), target="float")
    assert "eta" in str(info.value) and "detection_out" in str(info.value)


def test_cli_convert_to_float_tflite_verifies_detections(ssd, tmp_path):
    """`kerasq convert ... --tflite --verify` on an SSD: one file, detections verified."""
    import os

    _, proto, weights, x, _ = ssd
    cal = tmp_path / "cal.npy"
    np.save(cal, x.transpose(0, 2, 3, 1))
    out = tmp_path / "ssd.tflite"
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[2]))
    proc = subprocess.run(
        [sys.executable, "-m", "kerasq", "convert", proto, weights, "-o", str(tmp_path / "m.h5"),
         "--calibration", str(cal), "--tflite", str(out), "--tflite-target", "float", "--verify"],
        check=False, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "0 unmatched" in proc.stdout and out.exists()


def test_jdetnet_float_file_detections_equal_the_keras_model(tmp_path):
    """The whole caffe-jacinto JDetNet SSD (seeded weights; saturated scores, many exact
    ties at 1.0) in one float file: detections equal the Keras model's, heads too."""
    from conftest import shared_path
    from kerasq.converters.caffe import load

    from kerasq.export.tflite import export_tflite

    base = shared_path("caffe-models", "jacinto")
    proto = base / "voc-jdetnet-ssd768x320" / "deploy.prototxt"
    weights = tmp_path / "model.caffemodel"
    subprocess.run(
        [sys.executable, str(base / "make_weights.py"), str(proto), str(weights), "8", "new"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    model = load(proto, weights, input_shape={"data": (1, 3, 160, 384)})
    x = np.random.RandomState(0).uniform(0, 255, (2, 160, 384, 3)).astype(np.float32)
    result = export_tflite(model, target="float", verify_data=x, verify=True)
    report = result.report
    assert report.unmatched == 0 and report.count_mismatches == 0
    assert report.detections == 400 and report.postprocess_unmatched == 0
    assert report.head_error <= report.head_tolerance


def test_quantized_priors_stay_float_and_exact(ssd):
    """The priors Concatenate (all its inputs are float-role PriorBox constants) gets no
    output quantizer: its values in the quantized model equal the float model's exactly."""
    import kerasq
    from kerasq._compat import keras
    from kerasq.schemes.slots import iter_slots

    model, _, _, x, _ = ssd
    nhwc = x.transpose(0, 2, 3, 1)
    qmodel = kerasq.calibrate(kerasq.quantize_model(model), nhwc)
    concat = [lay.name for lay in model.layers
              if type(lay).__name__ == "Concatenate" and "prior" in lay.name]
    assert concat, [lay.name for lay in model.layers]
    quantized = {s.layer.name for s in iter_slots(qmodel) if s.role == "output"}
    assert not set(concat) & quantized
    name = concat[0]
    want = keras.Model(model.inputs, model.get_layer(name).output)(nhwc)
    inner = {getattr(lay, "layer", lay).name: lay for lay in qmodel.layers}[name]
    got = keras.Model(qmodel.inputs, inner.output)(nhwc)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
