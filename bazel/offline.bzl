"""Repository rules that let Debian's Bazel 4.2.3 (bazel-bootstrap) build this repo offline.

Bazel's built-in WORKSPACE suffix declares rules_cc, rules_java and
remote_coverage_tools as http_archives. Even pure Python targets touch them
(py_binary resolves the C++ toolchain, the default Java toolchains are
registered, every test carries the coverage tools), so an offline build fails
with "Unknown host: mirror.bazel.build". Declaring same-named repositories in
WORKSPACE first makes the suffix's `maybe(...)` skip the downloads:

  * rules_cc / rules_java: tiny shims that re-export the native rules (all
    that @bazel_tools needs from them). Debian's bazel-rules-cc 0.0.4 does
    not work with Bazel 4.2.3 ("does not contain symbol 'use_cpp_toolchain'").
  * remote_coverage_tools: stubs; `bazel coverage` is not supported.
  * venv_python: a Python toolchain whose interpreter is the project's
    virtualenv, so TensorFlow & co. come from its site-packages.
"""

_CC_DEFS = """\
cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
fdo_prefetch_hints = native.fdo_prefetch_hints
fdo_profile = native.fdo_profile
objc_import = native.objc_import
objc_library = native.objc_library
"""

def _rules_cc_shim_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "rules_cc")\n')
    rctx.file("BUILD.bazel", "")
    rctx.file("cc/defs.bzl", _CC_DEFS)
    rctx.file("cc/BUILD.bazel", """\
package(default_visibility = ["//visibility:public"])

alias(
    name = "toolchain_type",
    actual = "@bazel_tools//tools/cpp:toolchain_type",
)
""")

rules_cc_shim = repository_rule(implementation = _rules_cc_shim_impl)

_JAVA_DEFS = """\
java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_plugin = native.java_plugin
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
"""

def _rules_java_shim_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "rules_java")\n')
    rctx.file("BUILD.bazel", "")
    rctx.file("java/defs.bzl", _JAVA_DEFS)
    rctx.file("java/BUILD.bazel", "")

rules_java_shim = repository_rule(implementation = _rules_java_shim_impl)

def _coverage_tools_shim_impl(rctx):
    rctx.file("WORKSPACE", 'workspace(name = "remote_coverage_tools")\n')
    rctx.file(
        "unsupported.sh",
        "#!/bin/sh\necho 'bazel coverage is not supported by this offline setup' >&2\nexit 1\n",
        executable = True,
    )
    rctx.file("BUILD.bazel", """\
package(default_visibility = ["//visibility:public"])

sh_binary(name = "coverage_report_generator", srcs = ["unsupported.sh"])

sh_binary(name = "lcov_merger", srcs = ["unsupported.sh"])
""")

coverage_tools_shim = repository_rule(implementation = _coverage_tools_shim_impl)

def _venv_python_impl(rctx):
    python = rctx.os.environ.get("TFRESNET_PYTHON", "")
    if not python:
        workspace_root = rctx.path(Label("//:WORKSPACE")).dirname
        python = "%s/.venv/bin/python" % workspace_root
    if not rctx.path(python).exists:
        fail(("Python interpreter %s not found: create the project's virtualenv in " +
              ".venv, or set TFRESNET_PYTHON (or --repo_env=TFRESNET_PYTHON=...) " +
              "to a Python that has the project's requirements.") % python)
    rctx.file("BUILD.bazel", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{python}",
    python_version = "PY3",
    stub_shebang = "#!{python}",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
""".format(python = python))

venv_python = repository_rule(
    implementation = _venv_python_impl,
    environ = ["TFRESNET_PYTHON"],
    local = True,
)
