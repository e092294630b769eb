"""`kerasq export` on a model saved by kerasq.quantize_model: file, verification, errors."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.cli import main


@pytest.fixture(scope="module")
def saved_qmodel(tmp_path_factory):
    import kerasq
    from kerasq.demo import build_cnn, load_digits_data

    x_train, _, x_test, _ = load_digits_data()
    qmodel = kerasq.quantize_model(build_cnn())
    kerasq.calibrate(qmodel, x_train[:128])
    d = tmp_path_factory.mktemp("q")
    qmodel.save(d / "q.h5")
    np.save(d / "x.npy", x_test[:64])
    return d


def test_export_int8_with_verification(saved_qmodel, capsys):
    out = saved_qmodel / "m.tflite"
    code = main(
        [
            "export",
            str(saved_qmodel / "q.h5"),
            "-o",
            str(out),
            "--target",
            "int8",
            "--data",
            str(saved_qmodel / "x.npy"),
        ]
    )
    assert code == 0 and out.stat().st_size > 0
    text = capsys.readouterr().out
    # a logits output is judged in steps; top-1 agreement is shown for Softmax outputs only
    assert "verification:" in text and "identical" in text and "top-1" not in text


def test_export_float_verify(saved_qmodel):
    out = saved_qmodel / "f.tflite"
    assert (
        main(
            [
                "export",
                str(saved_qmodel / "q.h5"),
                "-o",
                str(out),
                "--target",
                "float",
                "--data",
                str(saved_qmodel / "x.npy"),
                "--verify",
            ]
        )
        == 0
    )


def test_missing_model_is_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasq: error: ") and "nope.h5" in err and "\n" not in err
    assert not (tmp_path / "m.tflite").exists()


def test_verify_without_data_is_an_error(saved_qmodel, capsys):
    out = saved_qmodel / "v.tflite"
    assert main(["export", str(saved_qmodel / "q.h5"), "-o", str(out), "--verify"]) == 2
    assert "verify" in capsys.readouterr().err
    assert not out.exists()


def test_convert_caffe_to_tflite_in_one_command(tmp_path, capsys):
    from kerasq.demo import build_cnn, load_digits_data
    from kerasq.converters.caffe.writer import write_caffe

    x = load_digits_data()[0][:96]
    write_caffe(build_cnn(), tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "q.json").write_text("{}")
    out = tmp_path / "n.tflite"
    code = main(
        [
            "convert",
            str(tmp_path / "n.prototxt"),
            str(tmp_path / "n.caffemodel"),
            "--quantize-config",
            str(tmp_path / "q.json"),
            "--calibration",
            str(tmp_path / "x.npy"),
            "--tflite",
            str(out),
            "--verify",
        ]
    )
    assert code == 0 and out.stat().st_size > 0
    text = capsys.readouterr().out
    assert "target int8" in text and "verification:" in text
