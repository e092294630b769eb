"""The real-Caffe golden cases (shared/caffe-golden) converted with ``keras=3``.

The case list, the runner and the tolerance (atol 1e-5·max(1, max|ref|) + rtol 1e-4) are
test_golden's; only the target differs: every dumped Caffe top must come out of the
Keras 3 model too.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

from conftest import shared_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_golden import CASES, assert_caffe_close, run_case  # noqa: E402


@pytest.mark.parametrize("case", CASES)
def test_golden_case_keras3(case):
    run_case(case, keras=3)


@pytest.mark.parametrize("case", ["batchnorm_scale", "resnet_block"])
def test_golden_unfolded_batchnorm_keras3(case):
    run_case(case, keras=3, fold_batchnorm=False)


def test_load_keras3_model_outputs_named_after_caffe_tops():
    """load(keras=3) is a Keras 3 model with tf_keras's names, called like the tf_keras one."""
    from kerasq.converters.caffe import load
    from kerasq.converters.caffe.keras3 import keras3

    folder = shared_path("caffe-golden", "resnet_block")
    model = load(folder / "deploy.prototxt", folder / "model.caffemodel", keras=3)
    assert isinstance(model, keras3().Model)
    assert model.output_names == ["res_sum"]
    x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
    want = np.load(folder / "blobs" / "res_sum.npy").transpose(0, 2, 3, 1)
    assert_caffe_close(np.asarray(model(x, training=False)), want, "res_sum")
    assert all(
        getattr(layer, "caffe_type", None) for layer in model.layers if layer.name != "data"
    ), "the lowering's caffe_name/caffe_type tags are kept"


def test_keras_option_is_checked():
    from kerasq.converters.caffe import load

    folder = shared_path("caffe-golden", "lenet")
    with pytest.raises(ValueError, match="keras=4"):
        load(folder / "deploy.prototxt", folder / "model.caffemodel", keras=4)


def test_convert_keras3_keeps_the_caffe_origin_of_every_layer():
    from kerasq.converters.caffe import convert

    folder = shared_path("caffe-golden", "conv_combo")
    files = (folder / "deploy.prototxt", folder / "model.caffemodel")
    tf_net, k3_net = convert(*files), convert(*files, keras=3)
    assert k3_net.layers == tf_net.layers and k3_net.layers


def test_importing_keras3_keeps_the_recursion_limit():
    """Keras 3's import lowers the interpreter's recursion limit (IPython -> jedi); the
    CLI raises it for deep nets, so the converter's Keras 3 import must keep it."""
    import subprocess

    code = ("import sys; sys.setrecursionlimit(12345); "
            "from kerasq.converters.caffe.keras3 import keras3; keras3(); "
            "print(sys.getrecursionlimit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.split()[-1] == "12345"
