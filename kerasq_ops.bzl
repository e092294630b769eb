"""Macro building a TensorFlow custom-op shared library (after tensorflow/addons)."""

# Keep in step with CXXFLAGS in kerasq/ops/_build_ext.py (tools/lint_bazel.py checks it).
KERASQ_COPTS = [
    "-std=c++17",
    "-O3",
    "-fPIC",
    "-ffp-contract=off",
    "-fno-trapping-math",
    "-Wno-deprecated-declarations",
]

def kerasq_custom_op_library(name, srcs, hdrs = [], copts = [], **kwargs):
    """cc_binary(linkshared) against @local_config_tf (headers + libtensorflow_framework).

    AVX2/FMA are opt-in (`--copt=-mavx2 --copt=-mfma`), as in setup.py where they are
    added only when the build CPU has them; the integer GEMM picks AVX2/AVX-512 VNNI at
    run time either way.
    """
    native.cc_binary(
        name = name,
        srcs = srcs + hdrs,
        copts = KERASQ_COPTS + copts,
        linkshared = 1,
        linkopts = ["-shared"],
        deps = [
            "@local_config_tf//:libtensorflow_framework",
            "@local_config_tf//:tf_header_lib",
        ],
        **kwargs
    )
