"""Triton kernel compilation for generated sources (the elementwise chains).

This module imports triton at the top: only CUDA code paths import it, lazily, so the package
imports on machines without triton (supports() then says "triton is not installed").
"""

from __future__ import annotations

import linecache

import triton
import triton.language as tl
from triton.language.extra import libdevice

# Generated kernels get their own namespace holding only what their source names.
_KERNEL_GLOBALS = {"tl": tl, "triton": triton, "libdevice": libdevice}


def compile_chain(name: str, source: str) -> "triton.JITFunction":
    """A triton.jit function from generated source. triton reads a kernel's source through
    `inspect`, so the source is registered with linecache under a file name of its own."""
    filename = f"<tensorkiln-triton:{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    scope = dict(_KERNEL_GLOBALS, __name__=f"tensorkiln_generated_{name}")
    exec(compile(source, filename, "exec"), scope)  # noqa: S102 - our own generated kernel source
    return triton.jit(scope[name])
