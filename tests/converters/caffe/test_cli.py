"""``kerasq convert`` / ``compare`` / ``inspect`` on real Caffe files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import shared_path


def _golden(case):
    folder = shared_path("caffe-golden", case)
    return folder, folder / "deploy.prototxt", folder / "model.caffemodel"


@pytest.mark.parametrize("suffix", [".h5", ".keras", "_savedmodel"])
def test_convert_save_reload_predict(capsys, tmp_path, suffix):
    """Formats by name; reload with custom_objects(); same numbers as Caffe."""
    from kerasq._compat import keras
    from kerasq.cli import main
    from kerasq.converters.caffe import custom_objects

    # pool_max_k3s2p1 needs EdgePadding2D, pool_ave_k3s2 a ConstantMultiply: both custom.
    for case, top in (("pool_max_k3s2p1", "pool"), ("pool_ave_k3s2", "pool")):
        folder, proto, model = _golden(case)
        out = tmp_path / f"{case}{suffix}"
        assert main(["convert", str(proto), str(model), "-o", str(out)]) == 0
        text = capsys.readouterr().out
        assert f"wrote {out}" in text and "parameters" in text and "output pool" in text
        loaded = keras.models.load_model(out, custom_objects=custom_objects(), compile=False)
        x = np.load(folder / "input.npy").transpose(0, 2, 3, 1)
        got = np.asarray(loaded(x, training=False)).transpose(0, 3, 1, 2)
        want = np.load(folder / "blobs" / f"{top}.npy")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1, np.abs(want).max()))
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kerasq-tmp")]


def test_inspect_lists_layers(capsys, tmp_path):
    from kerasq.cli import main

    _, proto, model = _golden("lenet")
    out = tmp_path / "lenet.h5"
    assert main(["convert", str(proto), str(model), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for fragment in (
        "conv1",
        "Conv2D",
        "(None, 24, 24, 20)",
        "520",
        "ip1",
        "Dense",
        "400,500",
        "prob",
        "Softmax",
        "431,080 parameters",
    ):
        assert fragment in text, fragment


def test_inspect_rejects_non_models(capsys, tmp_path):
    from kerasq.cli import main

    bad = tmp_path / "not_a_model.h5"
    bad.write_bytes(b"nonsense")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kerasq: error: ") and "not_a_model.h5" in err


def test_compare_passes_on_caffe_dumps(capsys):
    from kerasq.cli import main

    folder, proto, model = _golden("resnet_block")
    status = main(
        [
            "compare",
            str(proto),
            str(model),
            "--input",
            str(folder / "input.npy"),
            "--reference",
            str(folder / "blobs"),
        ]
    )
    text = capsys.readouterr().out
    assert status == 0, text
    assert "5/5 blobs match" in text
    for top in ("conv0", "res_a", "res_b", "res_sum", "data"):
        assert top in text


def test_compare_fails_on_a_perturbed_blob(capsys, tmp_path):
    from kerasq.cli import main

    folder, proto, model = _golden("lenet")
    ref = tmp_path / "ref"
    shutil.copytree(folder / "blobs", ref)
    ip2 = np.load(ref / "ip2.npy")
    ip2[0, 3] += 1e-2 * max(1.0, np.abs(ip2).max())
    np.save(ref / "ip2.npy", ip2)
    np.save(ref / "not_a_top.npy", ip2)
    status = main(
        [
            "compare",
            str(proto),
            str(model),
            "--input",
            f"data={folder / 'input.npy'}",
            "--reference",
            str(ref),
        ]
    )
    text = capsys.readouterr().out
    assert status == 1
    line = next(row for row in text.splitlines() if row.startswith("ip2"))
    assert "MISMATCH" in line
    assert "not_a_top" in text and "7/8 blobs match" in text
    # A looser tolerance accepts it.
    status = main(
        [
            "compare",
            str(proto),
            str(model),
            "--input",
            str(folder / "input.npy"),
            "--reference",
            str(ref),
            "--atol",
            "0.02",
        ]
    )
    assert status == 0


def test_convert_train_test_with_input_shape(capsys, tmp_path):
    from kerasq.cli import main

    folder = shared_path("caffe-models", "resnet20-cifar10")
    out = tmp_path / "resnet20.h5"
    status = main(
        [
            "convert",
            str(folder / "res20_cifar_train_test.prototxt"),
            str(folder / "ResNet_20.caffemodel"),
            "-o",
            str(out),
            "--input-shape",
            "Data1:1,3,32,32",
        ]
    )
    assert status == 0
    assert "output InnerProduct1: (None, 10)" in capsys.readouterr().out


def test_convert_outputs_option(capsys, tmp_path):
    from kerasq.cli import main

    folder = shared_path("caffe-models", "yufacedetectnet-v2")
    out = tmp_path / "heads.h5"
    status = main(
        [
            "convert",
            str(folder / "yufacedetectnet-open-v2.prototxt"),
            str(folder / "yufacedetectnet-open-v2.caffemodel"),
            "-o",
            str(out),
            "--outputs",
            "mbox_loc,mbox_conf_flatten",
        ]
    )
    assert status == 0
    text = capsys.readouterr().out
    assert "output mbox_loc: (None, 17680)" in text and "output mbox_conf_flatten" in text
    status = main(
        [
            "convert",
            str(folder / "yufacedetectnet-open-v2.prototxt"),
            str(folder / "yufacedetectnet-open-v2.caffemodel"),
            "-o",
            str(out),
            "--outputs",
            "no_such_top",
        ]
    )
    assert status == 2 and "no_such_top" in capsys.readouterr().err


def test_preprocessing_is_recorded_and_exact(capsys, tmp_path):
    """--mean/--scale/--swap-rb: y = (swap(x) - mean) * scale before the net (numpy check)."""
    from kerasq._compat import keras
    from kerasq.cli import main
    from kerasq.converters.caffe import custom_objects, forward

    folder, proto, model = _golden("conv_pad_stride")
    out = tmp_path / "pre.h5"
    assert (
        main(
            [
                "convert",
                str(proto),
                str(model),
                "-o",
                str(out),
                "--mean",
                "10,20,30",
                "--scale",
                "0.5",
                "--swap-rb",
            ]
        )
        == 0
    )
    loaded = keras.models.load_model(out, custom_objects=custom_objects(), compile=False)
    pre = [layer for layer in loaded.layers if type(layer).__name__ == "CaffePreprocess"]
    assert len(pre) == 1
    assert pre[0].get_config()["scale"] == 0.5 and pre[0].get_config()["swap_channels"]
    rgb = np.random.RandomState(0).uniform(0, 255, (2, 3, 17, 19)).astype(np.float32)
    bgr = (rgb[:, ::-1] - np.array([10, 20, 30], np.float32).reshape(1, 3, 1, 1)) * 0.5
    want = forward(proto, model, {"data": bgr}, blobs=["conv"])["conv"]
    got = np.asarray(loaded(rgb.transpose(0, 2, 3, 1), training=False)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1, np.abs(want).max()))


def test_mean_file_binaryproto(tmp_path):
    from kerasq.converters.caffe import forward, load, read_binaryproto

    mean_file = shared_path("caffe-models", "mean-binaryproto", "mean.binaryproto")
    base = shared_path("caffe-models", "cifar10-quick-v1")
    proto, weights = (
        base / "cifar10_quick_deploy.prototxt",
        base / "cifar10_quick_iter_5000.caffemodel",
    )
    model = load(proto, weights, mean=str(mean_file))
    x = np.random.RandomState(1).uniform(0, 255, (1, 3, 32, 32)).astype(np.float32)
    want = forward(proto, weights, {"data": x - read_binaryproto(mean_file)}, blobs=["prob"])[
        "prob"
    ]
    got = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_supported_layer_table_is_up_to_date():
    """docs/caffe_layers.md equals what tools/gen_caffe_support.py renders from the registry."""
    import importlib.util
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[3]
    spec = importlib.util.spec_from_file_location(
        "gen_caffe_support", repo / "tools" / "gen_caffe_support.py"
    )
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (repo / "docs" / "caffe_layers.md").read_text(encoding="utf-8")
    assert committed == gen.render(), "run: python tools/gen_caffe_support.py"
    keras3_doc = (repo / "docs" / "keras3.md").read_text(encoding="utf-8")
    assert keras3_doc == gen.keras3_doc(keras3_doc), "run: python tools/gen_caffe_support.py"
    for caffe_type in (
        "Convolution",
        "Deconvolution",
        "InnerProduct",
        "Pooling",
        "BatchNorm",
        "Scale",
        "Eltwise",
        "Concat",
        "Reshape",
        "PReLU",
        "LRN",
        "Slice",
    ):
        assert f"| `{caffe_type}` |" in committed


def test_verbose_logs_every_layer(capsys, caplog, tmp_path):
    import logging

    from kerasq.cli import main

    _, proto, model = _golden("lenet")
    with caplog.at_level(logging.INFO, logger="kerasq"):
        assert main(["-v", "convert", str(proto), str(model), "-o", str(tmp_path / "m.h5")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "kerasq.converters.caffe.lower"]
    assert len(lines) == 8  # Input is not a lowered layer
    assert lines[0].startswith("[1/8] conv1 (Convolution) -> [None, 20, 24, 24]")
    assert lines[-1].startswith("[8/8] prob (Softmax)")
