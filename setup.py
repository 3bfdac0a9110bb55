"""Build of crbench's optional C kernel; all metadata lives in pyproject.toml.

``crbench.metrics._kernel`` (the fused SSIM, squared-error and SAM sums of crbench.metrics
on CPU) is optional: without a C compiler the install still succeeds with a warning, and
crbench.metrics falls back to OpenCV and torch (the same numbers, 2-3x slower on CPU);
``crbench.metrics.native.available()`` says which is in use.
"""

import sys

from setuptools import Extension, setup

# No errno from sqrt and no floating-point traps: both let the compiler vectorise the
# kernel's branch-free selects; neither changes a result.
UNIX_FLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-fno-trapping-math"]

setup(ext_modules=[Extension(
    "crbench.metrics._kernel", ["crbench/metrics/_kernel.c"],
    extra_compile_args=["/O2"] if sys.platform == "win32" else UNIX_FLAGS, optional=True)])
