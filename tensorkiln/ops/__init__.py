"""Op library: one module per op (or per family table of trivial ops).

Every module in this package is imported here so its registrations run; adding an op
is adding a file, with no list to keep by hand.
"""

import importlib
import pkgutil

from .registry import (REGISTRY, REQUIRED, InferContext, Op, RunContext, all_ops, get_op, register)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("registry", "infer"):
        importlib.import_module(f"{__name__}.{_mod.name}")

from .infer import infer_graph_types  # noqa: E402

__all__ = ["REGISTRY", "REQUIRED", "InferContext", "Op", "RunContext", "all_ops", "get_op",
           "infer_graph_types", "register"]
