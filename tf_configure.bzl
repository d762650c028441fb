"""Repository rule exposing the locally installed TensorFlow (headers + framework library).

configure.sh writes the paths into .bazelrc.tf (--repo_env), so no network access is needed.
"""

def _local_tensorflow_impl(ctx):
    include = ctx.os.environ.get("TF_HEADER_DIR", "")
    libdir = ctx.os.environ.get("TF_SHARED_LIBRARY_DIR", "")
    version = ctx.os.environ.get("TF_VERSION", "")
    if not include or not libdir or not version:
        fail("The local TensorFlow is not configured: run ./configure.sh first " +
             "(it writes .bazelrc.tf with TF_HEADER_DIR, TF_SHARED_LIBRARY_DIR, TF_VERSION).")
    ctx.symlink(include, "include")
    ctx.symlink(libdir + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")
    ctx.file("version.bzl", "TF_VERSION = \"%s\"\n" % version)
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "tf_header_lib",
    hdrs = glob(["include/**"], exclude = ["include/**/*.py"]),
    includes = ["include"],
)

cc_library(
    name = "libtensorflow_framework",
    srcs = ["libtensorflow_framework.so.2"],
)

exports_files(["version.bzl"])
""")

local_tensorflow = repository_rule(
    implementation = _local_tensorflow_impl,
    environ = ["TF_HEADER_DIR", "TF_SHARED_LIBRARY_DIR", "TF_VERSION"],
    local = True,
)
