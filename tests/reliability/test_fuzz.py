"""Fuzzing the Caffe readers and ``QuantizationConfig.from_caffe`` with hypothesis.

Property: for ANY input the reader either succeeds or raises a ``KerasqError`` subclass
with a one-line message; never another exception, never a hang (each example runs under
a SIGALRM watchdog). Inputs: generated prototxt-like token soups, and truncations /
bit flips / byte splices / token edits of real files (the BVLC-Caffe golden corpus and the
caffe-jacinto / Ristretto prototxts of tests/schemes/data).

The default run is bounded (~350 examples in all, well under a minute). The long run:

    KERASQ_FUZZ_EXAMPLES=20000 pytest tests/reliability/test_fuzz.py -m slow -q
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import shutil
import signal
import tempfile
from typing import Iterator, List

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasq.errors import KerasqError

LONG_EXAMPLES = int(os.environ.get("KERASQ_FUZZ_EXAMPLES", "5000"))
WATCHDOG_SECONDS = 20


def _settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,  # shared 2-core machines: timing is the watchdog's job, not hypothesis'
        derandomize=True,  # reproducible in CI; the slow run explores with a fresh seed
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def _long_settings():
    return settings(
        max_examples=LONG_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
        database=None,
    )


@contextlib.contextmanager
def watchdog(seconds: int = WATCHDOG_SECONDS) -> Iterator[None]:
    """Fail (instead of hanging the suite) if one example runs longer than ``seconds``."""

    def fire(signum, frame):
        raise TimeoutError(f"reader did not finish within {seconds} s (hang?)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_clean_error(fn, *args, **kwargs):
    """Run ``fn``; a KerasqError must render as one line naming its reason."""
    with watchdog():
        try:
            return fn(*args, **kwargs)
        except KerasqError as err:
            text = str(err)
            assert text and "\n" not in text, repr(text)
            assert err.reason
            return None


# ------------------------------------------------------------------ corpora
GOLDEN_CASES = ["lenet", "conv_combo", "batchnorm_scale", "v1_legacy_layers", "concat", "prelu"]
QUANT_PROTOTXTS = sorted((REPO_ROOT / "tests" / "schemes" / "data").glob("*.prototxt"))

PROTOTXT_TOKENS = [
    "layer", "layers", "{", "}", ":", " ", "\n", '"', "name", "type", "bottom", "top",
    '"conv1"', '"data"', '"Convolution"', '"InnerProduct"', '"Input"', '"Pooling"',
    '"ReLU"', '"Concat"', '"Eltwise"', "convolution_param", "num_output", "kernel_size",
    "pad", "stride", "group", "input", "input_dim", "input_shape", "dim", "shape",
    "input_param", "pooling_param", "pool", "MAX", "AVE", "inner_product_param",
    "phase", "TEST", "include", "blobs", "data", "-1", "0", "1", "3", "1e40", "nan",
    "-inf", "0x7fffffff", "99999999999999999999", "#", ";", ",", "[", "]", "<", ">",
    "\\", "'", "\x00", "\u00e9", "quantize", "true", "false", "quantization_param",
    "bitwidth_weights", "bitwidth_activations", "fl_params", "precision",
    "DYNAMIC_FIXED_POINT", "MINIFLOAT", "rounding_scheme", "STOCHASTIC",
]


def _golden_bytes(name: str, file: str) -> bytes:
    return shared_path("caffe-golden", name, file).read_bytes()


@st.composite
def token_soup(draw) -> str:
    return "".join(draw(st.lists(st.sampled_from(PROTOTXT_TOKENS), max_size=60)))


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """Truncate, flip bits, overwrite or splice bytes of ``data``."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"]))
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        if kind == "truncate":
            del out[pos:]
        elif kind == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            out[pos : pos + len(chunk)] = chunk
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del out[pos : pos + draw(st.integers(1, 16))]
    return bytes(out)


@st.composite
def edited_text(draw, text: str) -> str:
    """Token-level edits of a prototxt: swap numbers/identifiers, drop or repeat lines."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["drop", "dup", "token", "braces"]))
        if kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "token":
            words = lines[i].split(" ")
            j = draw(st.integers(0, len(words) - 1))
            words[j] = draw(st.sampled_from(PROTOTXT_TOKENS))
            lines[i] = " ".join(words)
        else:
            lines.insert(i, draw(st.sampled_from(["{", "}", "layer {", "}}", "quantize: 7"])))
    return "\n".join(lines)


# ------------------------------------------------------------------ the properties
def _prototxt_pipeline(text: str) -> None:
    """Parse a prototxt and normalize it to a graph (no TensorFlow involved)."""
    from kerasq.converters.caffe import passes, reader

    net = reader.parse_prototxt_text(text, "fuzz.prototxt")
    if net.layer or net.layers or net.input:
        passes.build_graph(net, None, source="fuzz.prototxt", input_shape=None)


def _caffemodel_pipeline(data: bytes):
    from kerasq.converters.caffe import reader

    weights = reader.parse_caffemodel_bytes(data, "fuzz.caffemodel")
    return reader.weights_by_layer(weights, "fuzz.caffemodel")


_STREAM_DIR = tempfile.mkdtemp(prefix="kerasq_fuzz_")
atexit.register(shutil.rmtree, _STREAM_DIR, True)


def _stream_pipeline(data: bytes):
    from kerasq.converters.caffe.stream_reader import read_caffemodel_table

    path = os.path.join(_STREAM_DIR, "fuzz.caffemodel")
    with open(path, "wb") as f:
        f.write(data)
    return read_caffemodel_table(path)


def _text_keys(table):
    """protobuf hands back a non-UTF-8 proto2 string as bytes; the stream reader decodes it
    with U+FFFD replacements (neither matches a prototxt name; compare them as text)."""
    return {
        (k.decode("utf-8", errors="replace") if isinstance(k, bytes) else k): v
        for k, v in table.items()
    }


def _same_tables(a, b) -> None:
    a, b = _text_keys(a), _text_keys(b)
    assert list(a) == list(b)
    for name in a:
        assert len(a[name]) == len(b[name])
        for blobs_a, blobs_b in zip(a[name], b[name]):
            assert [x.shape for x in blobs_a] == [y.shape for y in blobs_b], name
            for x, y in zip(blobs_a, blobs_b):
                assert np.array_equal(x, y, equal_nan=True), name


def _run_prototxt(text: str) -> None:
    check_clean_error(_prototxt_pipeline, text)


def _run_caffemodel(data: bytes) -> None:
    """Both caffemodel readers (protobuf and streaming); where both accept, they agree."""
    parsed = check_clean_error(_caffemodel_pipeline, data)
    streamed = check_clean_error(_stream_pipeline, data)
    if parsed is not None and streamed is not None:
        _same_tables(parsed, streamed)


def _run_from_caffe(tmp_dir: pathlib.Path, text: str) -> None:
    from kerasq.schemes.config import QuantizationConfig

    path = tmp_dir / "fuzz_quant.prototxt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_clean_error(QuantizationConfig.from_caffe, str(path))


def _real_prototxts() -> List[str]:
    return [_golden_bytes(c, "deploy.prototxt").decode() for c in GOLDEN_CASES]


def _real_caffemodels() -> List[bytes]:
    return [_golden_bytes(c, "model.caffemodel") for c in GOLDEN_CASES if c != "lenet"]


def test_prototxt_token_soup():
    @_settings(100)
    @given(token_soup())
    def run(text):
        _run_prototxt(text)

    run()


def test_prototxt_mutations_of_golden_files():
    texts = _real_prototxts()

    @_settings(80)
    @given(st.sampled_from(texts).flatmap(lambda t: edited_text(t)))
    def run(text):
        _run_prototxt(text)

    run()


def test_caffemodel_mutations_of_golden_files():
    blobs = _real_caffemodels()

    @_settings(80)
    @given(st.sampled_from(blobs).flatmap(lambda b: mutated(b)))
    def run(data):
        _run_caffemodel(data)

    run()


def test_caffemodel_random_bytes():
    @_settings(30)
    @given(st.binary(max_size=256))
    def run(data):
        _run_caffemodel(data)

    run()


def test_from_caffe_mutations(tmp_path):
    assert QUANT_PROTOTXTS, "tests/schemes/data holds the caffe-jacinto/Ristretto prototxts"
    texts = [p.read_text() for p in QUANT_PROTOTXTS]

    @_settings(60)
    @given(
        st.one_of(
            st.sampled_from(texts).flatmap(lambda t: edited_text(t)),
            token_soup(),
        )
    )
    def run(text):
        _run_from_caffe(tmp_path, text)

    run()


def test_unmodified_inputs_are_accepted(tmp_path):
    """The fuzz seeds themselves parse (so the properties above are not vacuous)."""
    for text in _real_prototxts():
        _prototxt_pipeline(text)
    for data in _real_caffemodels():
        _caffemodel_pipeline(data)
    from kerasq.schemes.config import QuantizationConfig

    for path in QUANT_PROTOTXTS:
        if "solver" not in path.name:
            assert isinstance(QuantizationConfig.from_caffe(str(path)), QuantizationConfig)


@pytest.mark.slow
def test_long_fuzz_all_readers(tmp_path):
    """The long run (KERASQ_FUZZ_EXAMPLES per reader, default 5000)."""
    texts = _real_prototxts()
    blobs = _real_caffemodels() + [_golden_bytes("lenet", "model.caffemodel")]
    quant = [p.read_text() for p in QUANT_PROTOTXTS]

    @_long_settings()
    @given(st.one_of(token_soup(), st.sampled_from(texts).flatmap(lambda t: edited_text(t))))
    def prototxts(text):
        _run_prototxt(text)

    @_long_settings()
    @given(st.one_of(st.binary(max_size=512), st.sampled_from(blobs).flatmap(mutated)))
    def caffemodels(data):
        _run_caffemodel(data)

    @_long_settings()
    @given(st.one_of(token_soup(), st.sampled_from(quant).flatmap(lambda t: edited_text(t))))
    def quant_configs(text):
        _run_from_caffe(tmp_path, text)

    prototxts()
    caffemodels()
    quant_configs()


# Inputs the long run found (fixed since): kept as fixed regression examples.
FOUND_BY_FUZZING = [
    # non-UTF-8 layer name + blob size mismatch: protobuf returned the name as bytes and
    # building the error raised TypeError (reader.weights_by_layer)
    b'\n\x05prelu\xa2\x06 \n\x04data\x12\x05Input"\x04dataP\x01\xfa\x08\x08\n\x06\n\x04\x01'
    b'\x03\x11\x13\xa2\x06M\n\x05\x80relu\x12\x05PReLU\x1a\x04data"\x05prelu:\x13*\x0c\xc3'
    b'\xd7\x87>\xc0_\xa9\xbd\x00\xa6~=:\x03\x1a\x01\x03P\x01\x9a\x08\x18\n\x14\n\x08gaussian'
    b'-\x00\x00\x80>5\xcd\xccL>\x10\x00',
    # a layer name holding a newline, then a truncated field: the stream reader's message
    # spanned two lines
    b'\n\x05prelu\xa2\x06 \n\x04data\x12\x05I\x00\x00\x00\x00!\x04dataP\x01\xfa\x08\x08\n'
    b'\x06\n\x04\x01\x03\x11\x13\xa2\x06M',
]


@pytest.mark.parametrize("index", range(len(FOUND_BY_FUZZING)))
def test_regressions_found_by_fuzzing(index):
    _run_caffemodel(FOUND_BY_FUZZING[index])
