"""Repository rule exposing the pip-installed TensorFlow to Bazel (after tensorflow/custom-op).

Creates @local_config_tf with
  :tf_header_lib             the headers of tf.sysconfig.get_include()
  :libtensorflow_framework   tf.sysconfig.get_lib()/libtensorflow_framework.so.2
  :tf_defines                TF's -D compile flags (e.g. _GLIBCXX_USE_CXX11_ABI) as `defines`
"""

_PYTHON_ENV = "PYTHON_BIN_PATH"

_QUERY = """
import json, tensorflow as tf
flags = tf.sysconfig.get_compile_flags()
print(json.dumps({
    "include": tf.sysconfig.get_include(),
    "lib": tf.sysconfig.get_lib(),
    "defines": [f[2:] for f in flags if f.startswith("-D")],
}))
"""

def _python(repository_ctx):
    python = repository_ctx.os.environ.get(_PYTHON_ENV, "")
    if not python:
        python = repository_ctx.which("python3") or repository_ctx.which("python")
    if not python:
        fail("tf_configure: no python found; set " + _PYTHON_ENV)
    return str(python)

def _tf_configure_impl(repository_ctx):
    result = repository_ctx.execute(
        [_python(repository_ctx), "-c", _QUERY],
        environment = {"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.return_code != 0:
        fail("tf_configure: cannot import tensorflow:\n" + result.stderr)
    info = json.decode(result.stdout.strip().splitlines()[-1])
    repository_ctx.symlink(info["include"], "include")
    repository_ctx.symlink(info["lib"] + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")
    repository_ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "tf_header_lib",
    hdrs = glob(["include/**"]),
    includes = ["include"],
    defines = {defines},
)

cc_library(
    name = "libtensorflow_framework",
    srcs = ["libtensorflow_framework.so.2"],
)
""".format(defines = repr(info["defines"])))

tf_configure = repository_rule(
    implementation = _tf_configure_impl,
    environ = [_PYTHON_ENV],
    local = True,
)
