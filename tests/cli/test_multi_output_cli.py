"""``kerasq compare`` and ``kerasq inspect`` on real multi-output nets (UltraFace: scores and
boxes; MTCNN det2: conv5-2 and prob1): every output is checked and named by its Caffe top.

References: OpenCV's ``cv2.dnn.readNetFromCaffe`` for ``compare`` (every net output dumped
as ``<top>.npy``), and ai-edge-litert's interpreter run directly (not through kerasq's
verifier) against the reloaded ``q.h5`` for ``inspect --tflite``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from kerasq.cli import main

NETS = {
    "ultraface": ("ultraface-rfb320/RFB-320.prototxt", "ultraface-rfb320/RFB-320.caffemodel",
                  (1, 3, 240, 320), ["boxes", "scores"]),
    "mtcnn-det2": ("mtcnn/det2.prototxt", "mtcnn/det2.caffemodel", (2, 3, 24, 24),
                   ["conv5-2", "prob1"]),
}


def _opencv_references(prototxt, caffemodel, x, folder):
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setInput(x)
    names = list(net.getUnconnectedOutLayersNames())
    folder.mkdir()
    for name, value in zip(names, net.forward(names)):
        np.save(folder / f"{name}.npy", value)
    return names


@pytest.mark.parametrize("name", list(NETS))
def test_compare_checks_every_output_by_its_top(name, tmp_path, capsys):
    proto, weights, shape, tops = NETS[name]
    prototxt = shared_path("caffe-models", proto)
    caffemodel = shared_path("caffe-models", weights)
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert sorted(_opencv_references(prototxt, caffemodel, x, tmp_path / "ref")) == tops
    assert main(["compare", str(prototxt), str(caffemodel), "--input", str(tmp_path / "x.npy"),
                 "--reference", str(tmp_path / "ref")]) == 0
    out = capsys.readouterr().out
    for top in tops:
        assert any(line.startswith(top + " ") and line.endswith("ok")
                   for line in out.splitlines()), out
    assert f"{len(tops)}/{len(tops)} blobs match" in out
    # one reference missing: that output is named as not compared, not passed silently
    (tmp_path / "ref" / f"{tops[0]}.npy").unlink()
    assert main(["compare", str(prototxt), str(caffemodel), "--input", str(tmp_path / "x.npy"),
                 "--reference", str(tmp_path / "ref")]) == 0
    assert f"net outputs not compared (no {tmp_path / 'ref'}/<top>.npy): {tops[0]}" \
        in capsys.readouterr().out


def test_inspect_names_and_checks_every_output_of_the_file(tmp_path, capsys):
    from export.real_net_matrix import compare_file_with_h5

    proto, weights, _, tops = NETS["mtcnn-det2"]
    prototxt = shared_path("caffe-models", proto)
    caffemodel = shared_path("caffe-models", weights)
    x = np.random.default_rng(1).uniform(-1, 1, (32, 24, 24, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model, q, tfl = tmp_path / "m.h5", tmp_path / "q.h5", tmp_path / "q.tflite"
    assert main(["convert", str(prototxt), str(caffemodel), "-o", str(model)]) == 0
    assert main(["quantize", str(model), "--calibration", str(tmp_path / "x.npy"),
                 "-o", str(q)]) == 0
    assert main(["export", str(q), "-o", str(tfl), "--target", "int8"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(q), "--data", str(tmp_path / "x.npy"), "--tflite",
                 str(tfl)]) == 0
    out = capsys.readouterr().out
    assert "outputs: conv5-2 (None, 4) values; prob1 (None, 2) classifier" in out
    independent = {o.name: o for o in compare_file_with_h5(tfl, q, x)}
    assert sorted(independent) == tops
    for top in tops:
        line = next(line for line in out.splitlines() if line.startswith(f"  {top}: "))
        assert f"{100 * independent[top].exact_fraction:.2f}% identical" in line
