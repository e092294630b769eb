"""Keras 3 quantization on the TensorFlow backend, checked against the tf_keras path (the
same model rebuilt in tf_keras and quantized there) and the TFLite interpreter."""

import numpy as np
import pytest

import kerasq
from kerasq._compat import keras3
from kerasq.errors import ModelFormatError, UnsupportedLayerError
from kerasq.keras3 import twin as k3twin
from kerasq.keras3.layers import QuantizedLayer
from kerasq.schemes.api import quantize_model as tf_keras_quantize
from kerasq.schemes.calibration import calibrate as tf_keras_calibrate

keras = keras3()


def _tf_keras_reference(model3, config, calib):
    """The tf_keras path on a tf_keras copy of the float Keras 3 model."""
    tf_float = k3twin.to_tf_keras(model3)
    qref = tf_keras_quantize(tf_float, config)
    tf_keras_calibrate(qref, calib)
    return qref


def _tflite_outputs(blob, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i:i + 1])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def test_ptq_matches_tf_keras_path_and_int8_file_bit_for_bit(branchy, digits, k3):
    x, _, xt, yt = digits
    qmodel = kerasq.quantize_model(branchy)
    assert any(isinstance(l, QuantizedLayer) for l in qmodel.layers)
    assert "bn1" not in [l.name for l in qmodel.layers]  # folded
    kerasq.calibrate(qmodel, x[:256])
    ref = _tf_keras_reference(branchy, kerasq.QuantizationConfig(), x[:256])
    got = k3.predict(qmodel, xt)
    np.testing.assert_array_equal(got, ref(xt, training=False).numpy())
    blob = kerasq.export.to_tflite(qmodel, target="int8", verify_data=xt[:64], verify=True)
    np.testing.assert_array_equal(_tflite_outputs(blob, xt), k3.predict(qmodel, xt))
    float_acc = np.mean(k3.predict(branchy, xt).argmax(-1) == yt)
    assert np.mean(got.argmax(-1) == yt) >= float_acc - 0.03


@pytest.mark.parametrize("config", [
    {"precision": "dfp", "bitwidth_weights": 4, "bitwidth_activations": 6,
     "per_channel_weights": False, "rounding": "nearest"},
    {"precision": "dfp", "rounding": "nearest_even", "range_estimator": "ema",
     "overrides": {"fc": {"bitwidth_weights": 6}, "Conv2D": {"bitwidth_activations": 7}}},
    {"precision": "dfp", "power2_range": False, "bitwidth_bias": 16},
    {"precision": "dfp", "apply_offset_activations": True, "rounding": "nearest"},
    {"precision": "minifloat", "exp_bits": 4, "mant_bits": 3},
    {"precision": "pow2_weights", "rounding": "nearest"},
], ids=["dfp4-per-tensor", "ema-overrides", "jacinto-scale", "offset", "minifloat", "pow2"])
def test_schemes_match_tf_keras_path(config, digits, k3):
    x, y, xt, _ = digits
    model = k3.train(k3.sequential(), x, y, epochs=2)
    qmodel = kerasq.quantize_model(model, config)
    kerasq.calibrate(qmodel, x[:128])
    ref = _tf_keras_reference(model, kerasq.QuantizationConfig.from_dict(config), x[:128])
    np.testing.assert_array_equal(k3.predict(qmodel, xt), ref(xt, training=False).numpy())


def test_conv_transpose_and_average_pooling_match_tf_keras_path(digits, k3):
    """Conv2DTranspose and AveragePooling2D: bit-identical to the tf_keras path; the int8
    file is bit-identical to the Keras 3 model in the interpreter, the float file close."""
    x, y, xt, _ = digits
    model = k3.train(k3.transpose(), x, y, epochs=2)
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, x[:128])
    ref = _tf_keras_reference(model, kerasq.QuantizationConfig(), x[:128])
    np.testing.assert_array_equal(k3.predict(qmodel, xt), ref(xt, training=False).numpy())
    blob = kerasq.export.to_tflite(qmodel, target="float")
    out = _tflite_outputs(blob, xt[:32])
    np.testing.assert_allclose(out, k3.predict(qmodel, xt[:32]), atol=1e-3)
    blob = kerasq.export.to_tflite(qmodel, target="int8", verify_data=xt[:64], verify=True)
    np.testing.assert_array_equal(_tflite_outputs(blob, xt[:100]), k3.predict(qmodel, xt[:100]))


def test_qat_fit_save_reload_and_export(branchy, digits, tmp_path, k3):
    x, y, xt, yt = digits
    qmodel = kerasq.quantize_model(branchy)
    kerasq.calibrate(qmodel, x[:256])
    before = {v.path: np.array(v) for v in qmodel.non_trainable_variables}
    qmodel.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    qmodel.fit(x, y, epochs=1, batch_size=64, verbose=0,
               callbacks=[kerasq.keras3.SharedGridCallback()])
    changed = [p for p, v in before.items() if p.endswith("_max")
               and not np.array_equal(v, np.array(next(
                   w for w in qmodel.non_trainable_variables if w.path == p)))]
    assert changed, "QAT did not update any range"
    path = tmp_path / "q.keras"
    qmodel.save(path)
    loaded = kerasq.load_model(path)
    np.testing.assert_array_equal(k3.predict(loaded, xt), k3.predict(qmodel, xt))
    blob = kerasq.export.to_tflite(loaded, target="int8", verify_data=xt[:64], verify=True)
    np.testing.assert_array_equal(_tflite_outputs(blob, xt[:100]), k3.predict(loaded, xt[:100]))
    assert np.mean(k3.predict(loaded, xt).argmax(-1) == yt) >= 0.8


def test_other_export_targets(branchy, digits, k3):
    x, _, xt, _ = digits
    qmodel = kerasq.quantize_model(branchy)
    kerasq.calibrate(qmodel, x[:128])
    for target in ("float", "float16", "int16x8"):
        blob = kerasq.export.to_tflite(qmodel, target=target, representative_data=x[:32])
        out = _tflite_outputs(blob, xt[:32])
        assert np.mean(out.argmax(-1) == k3.predict(qmodel, xt[:32]).argmax(-1)) >= 0.9


def test_pruned_model_keeps_zeros_through_qat_and_export(digits, k3):
    from kerasq.prune.magnitude import magnitude_mask

    x, y, xt, _ = digits
    model = k3.train(k3.sequential(), x, y, epochs=2)
    for layer in model.layers:
        if layer.name in ("conv2", "fc"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * magnitude_mask(kernel, 0.6), bias])
    qmodel = kerasq.quantize_model(model)  # exact zeros: sparsity preserved
    kerasq.calibrate(qmodel, x[:128])
    qmodel.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qmodel.fit(x, y, epochs=1, batch_size=64, verbose=0)
    twin = kerasq.keras3.tf_keras_twin(qmodel)
    from kerasq.schemes import slots

    for slot in slots.iter_slots(twin):
        if slot.role == "kernel" and slot.layer.name in ("conv2", "fc"):
            q = slot(slot.weight).numpy()
            assert np.mean(q == 0) >= 0.6, slot.layer.name
    result = kerasq.export.export_tflite(qmodel, target="int8", verify_data=xt[:64],
                                         verify=True)
    from kerasq.demo import _kernel_sparsity

    assert _kernel_sparsity(result.plan) > 0.3


def test_pruning_continues_during_qat_and_masks_are_saved(digits, k3, tmp_path):
    x, y, xt, _ = digits
    model = k3.train(k3.sequential(), x, y, epochs=2)
    assert abs(kerasq.keras3.prune_model(model, 0.3, layers=["conv2", "fc"]) - 0.3) < 0.02
    qmodel = kerasq.quantize_model(model)
    kerasq.calibrate(qmodel, x[:128])
    qmodel.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    callback = kerasq.keras3.PruningCallback(0.7, begin_step=0, end_step=30, frequency=5,
                                             layers=["conv2", "fc"])
    qmodel.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback])
    from kerasq.keras3.prune import mask_slots

    masks = {layer.name: np.array(qv["mask"]) for layer, _, qv in mask_slots(qmodel)}
    assert np.all(masks.pop("quant_conv1") == 1)  # masked (exact zeros kept), not pruned
    assert set(masks) == {"quant_conv2", "quant_fc"}
    for mask in masks.values():
        assert abs(np.mean(mask == 0) - 0.7) < 0.02
    qmodel.save(tmp_path / "p.keras")
    loaded = kerasq.load_model(tmp_path / "p.keras")
    for layer, kernel, qv in mask_slots(loaded):
        if layer.name in masks:
            np.testing.assert_array_equal(np.array(qv["mask"]), masks[layer.name])
    twin = kerasq.keras3.tf_keras_twin(loaded)
    from kerasq.schemes import slots

    for slot in slots.iter_slots(twin):
        if slot.role == "kernel" and slot.layer.name in ("conv2", "fc"):
            q = slot(slot.weight).numpy()
            assert np.all(q[masks["quant_" + slot.layer.name] == 0] == 0)
    kerasq.export.to_tflite(loaded, target="int8", verify_data=xt[:64], verify=True)


def test_bad_models_are_refused_clearly():
    class Sub(keras.Model):
        def call(self, x):
            return x

    sub = Sub()
    sub.build((None, 4))
    with pytest.raises(ModelFormatError):
        kerasq.quantize_model(sub)
    inp = keras.Input((4, 3))
    odd = keras.Model(inp, keras.layers.RMSNormalization(name="rms")(inp))
    with pytest.raises(UnsupportedLayerError, match="RMSNormalization"):
        kerasq.quantize_model(odd)


def test_load_model_refuses_code_in_a_keras3_file(tmp_path):
    from kerasq.errors import KerasqError

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0, name="code")(inp))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(KerasqError):
        kerasq.load_model(path)
    from kerasq.dispatch import is_keras3_file

    assert is_keras3_file(path)
    assert not is_keras3_file(tmp_path / "missing.keras")
