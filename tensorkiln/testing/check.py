"""One call to check a model through tensorkiln against an oracle, for per-op tests."""

from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np
import onnx
import onnx.parser

from .oracles import run_onnxruntime, run_reference_evaluator
from .tolerances import assert_close

ORACLES = {"ort": run_onnxruntime, "ref": run_reference_evaluator}


def parse(text: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(text)


def check_model(model: Union[str, onnx.ModelProto], feeds: Mapping[str, np.ndarray], *, device: str = "cpu",
                oracle: str = "ort", precision: str = "fp32", expected: Optional[Mapping[str, np.ndarray]] = None
                ) -> dict[str, np.ndarray]:
    """Build and run `model` with tensorkiln; compare every output with the oracle
    (or `expected`) at the precision's tolerance. Returns tensorkiln's outputs."""
    import tensorkiln
    if isinstance(model, str):
        model = parse(model)
    if expected is None:
        expected = ORACLES[oracle](model, feeds)
    # TF32 (on by default on CUDA, as in TensorRT) only where the test asks for its tolerance.
    got = tensorkiln.compile(model, device=device, tf32=precision == "tf32").predict(dict(feeds))
    for name, want in expected.items():
        assert name in got, f"output '{name}' missing from tensorkiln's outputs {list(got)}"
        assert got[name].dtype == want.dtype, f"output '{name}': dtype {got[name].dtype} != {want.dtype}"
        assert_close(got[name], want, precision, what=f"output '{name}'")
    return got
