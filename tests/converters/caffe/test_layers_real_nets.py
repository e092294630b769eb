"""Normalize, Permute, Flatten and other non-core layers inside real nets, against OpenCV's independent Caffe implementation.

YuFaceDetectNet v2 (SSD fork: Normalize with learned per-channel scale, Permute, Flatten,
Concat) is cut before its PriorBox / DetectionOutput post-processing, and every Normalize /
Permute / head top is compared with ``cv2.dnn.readNetFromCaffe`` on a random image.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import shared_path

cv2 = pytest.importorskip("cv2")


def _heads_only(prototxt: str) -> str:
    head, *blocks = re.split(r"\nlayer\s*{", prototxt)
    keep = [
        "layer {" + b
        for b in blocks
        if not re.search(r'type:\s*"(PriorBox|DetectionOutput)"', b) and "mbox_priorbox" not in b
    ]
    return head + "\n" + "\n".join(keep)


def test_yufacedetectnet_normalize_permute_heads_match_opencv(tmp_path):
    from kerasq.converters.caffe import forward

    folder = shared_path("caffe-models", "yufacedetectnet-v2")
    proto = tmp_path / "heads.prototxt"
    proto.write_text(_heads_only((folder / "yufacedetectnet-open-v2.prototxt").read_text()))
    model = folder / "yufacedetectnet-open-v2.caffemodel"
    x = (np.random.RandomState(0).rand(1, 3, 120, 160) * 255).astype(np.float32)

    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    names = [
        n
        for n in net.getLayerNames()
        if n.endswith(("_norm", "_perm", "_flat")) or n.startswith("mbox_")
    ]
    net.setInput(x)
    theirs = dict(zip(names, net.forward(names)))
    ours = forward(proto, model, {"data": x})
    assert (
        sum(n.endswith("_norm") for n in names) == 4
        and sum(n.endswith("_perm") for n in names) == 8
    )
    for name, want in theirs.items():
        got = ours[name].reshape(want.shape)
        atol = 1e-5 * max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=name)
