"""Caffe Deconvolution with dense kernels (group 1 with strides 2x3 and 2x2, and group 3
stored block-diagonal) through the CLI: convert, quantize, `export --target int8 --verify --max-error-steps 0`.
References: the TFLite interpreter against the Keras model (the CLI's verification, bit for
bit), a numpy transposed convolution of the grid values, and the float outputs of real Caffe
(group 3, shared/caffe-models/opencv-layers) and of OpenCV's cv2.dnn (group 1, weights from
caffe-jacinto's make_weights.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import shared_path
from export.test_transpose_int8 import _on_grid, transpose_conv_reference

from kerasq.cli import main


def _group1_net(tmp_path, folder, stride_w):
    """The group 3 layer as group 1 (15 x 12 dense kernel) with stride 2 x ``stride_w``,
    seeded weights written by make_weights.py, its float output computed by OpenCV."""
    cv2 = pytest.importorskip("cv2")
    maker = shared_path("caffe-models", "jacinto", "make_weights.py")
    prototxt = tmp_path / "deconv_g1.prototxt"
    prototxt.write_text((folder / "layer_deconvolution.prototxt").read_text()
                        .replace("group: 3", "group: 1")
                        .replace("stride_w: 3", f"stride_w: {stride_w}"))
    weights = tmp_path / "deconv_g1.caffemodel"
    subprocess.run([sys.executable, str(maker), str(prototxt), str(weights), "3"], check=True,
                   capture_output=True)
    x = np.load(folder / "layer_deconvolution.input.npy")
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    net.setInput(x)
    return prototxt, weights, x, net.forward()


@pytest.mark.parametrize("group, stride_w", [(3, 3), (1, 3), (1, 2)])
def test_caffe_deconvolution_to_verified_int8_through_the_cli(tmp_path, capsys, group,
                                                              stride_w):
    import kerasq
    from kerasq.export.graph import build_deploy_model
    from kerasq.export.verify import TFLiteRunner, op_table
    from kerasq.schemes import slots

    folder = shared_path("caffe-models", "opencv-layers")
    if group == 3:
        prototxt = folder / "layer_deconvolution.prototxt"
        weights = folder / "layer_deconvolution.caffemodel"
        x = np.load(folder / "layer_deconvolution.input.npy")
        float_out = np.load(folder / "layer_deconvolution.npy")  # real Caffe's output
    else:
        prototxt, weights, x, float_out = _group1_net(tmp_path, folder, stride_w)
    rng = np.random.default_rng(0)
    calibration = np.concatenate([x, rng.uniform(x.min(), x.max(), (14, *x.shape[1:]))])
    np.save(tmp_path / "cal.npy", calibration.astype(np.float32))
    np.save(tmp_path / "x.npy", x)
    h5, q5, out = tmp_path / "net.h5", tmp_path / "q.h5", tmp_path / "net.tflite"
    assert main(["convert", str(prototxt), str(weights), "-o", str(h5)]) == 0
    quantize = ["quantize", str(h5), "--calibration", str(tmp_path / "cal.npy"), "-o", str(q5)]
    if group == 1:  # caffe-jacinto's settings (`quantize: true`) made int8-deployable
        settings = tmp_path / "settings.prototxt"
        settings.write_text("quantize: true\n" + prototxt.read_text())
        quantize += ["--config", str(settings), "--int8"]
    assert main(quantize) == 0
    capsys.readouterr()
    assert main(["export", str(q5), "-o", str(out), "--target", "int8", "--data",
                 str(tmp_path / "x.npy"), "--verify", "--max-error-steps", "0"]) == 0
    said = capsys.readouterr().out
    assert "100.00% identical" in said, said
    content = out.read_bytes()
    ops = [op["op"] for op in op_table(content)]
    assert "TRANSPOSE_CONV" not in ops and "CONV_2D" in ops, ops
    assert ("DEPTH_TO_SPACE" in ops) == (stride_w == 2), ops  # sub-pixel form: square strides

    # numpy: the input grid, the Keras quantizers' kernel and bias, the Caffe pad crop
    qmodel = kerasq.load_model(str(q5))
    plan = build_deploy_model(qmodel, "fakequant8")
    wrapper = next(lay for lay in qmodel.layers
                   if type(getattr(lay, "layer", None)).__name__ == "Conv2DTranspose")
    inner = wrapper.layer
    values = {}
    for entry in slots.weight_slots(wrapper):
        q = entry.quantizer(entry.weight, training=False, weights=entry.variables)
        values[entry.weight.name.split("/")[-1].split(":")[0]] = np.asarray(q, np.float64)
    in_spec = next(s for rows in plan.specs.values() for what, s in rows if what == "input")
    out_spec = dict(plan.specs[inner.name])["output"]
    crop = next(getattr(lay, "layer", lay) for lay in qmodel.layers
                if type(getattr(lay, "layer", lay)).__name__ == "Cropping2D")
    (top, bottom), (left, right) = crop.cropping
    nhwc = x.transpose(0, 2, 3, 1)
    full_hw = tuple(int(d) for d in inner.compute_output_shape((None, *nhwc.shape[1:]))[1:3])
    full = transpose_conv_reference(_on_grid(nhwc, in_spec), values["kernel"],
                                    values.get("bias"), inner.strides, "valid", full_hw)
    want = _on_grid(full, out_spec)[:, top:full_hw[0] - bottom, left:full_hw[1] - right]
    got = TFLiteRunner(content)(nhwc)
    np.testing.assert_array_equal(got, want)
    # and the float net (real Caffe / OpenCV): within the input, weight and output rounding
    step = float(out_spec.step)
    assert np.abs(got - float_out.transpose(0, 2, 3, 1)).max() <= 2 * step
