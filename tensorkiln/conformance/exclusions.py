"""ONNX node tests tensorkiln does not pass, each with its reason.

Keys are regular expressions matched (re.fullmatch) against the test name. The test
suite runs excluded cases as strict expected failures, so an entry that starts passing
must be removed.
"""

from __future__ import annotations

import re
from typing import Optional

_STRINGS = "string tensors are not supported by the tensor runtime (no torch dtype)"
RANDOM_OUTPUT = ("random op: the expected data is numpy's random stream, which torch's generator cannot reproduce "
           "(shape, dtype and seeding are tested in tests/ops)")

EXCLUSIONS: dict[str, str] = {
    r"test_ai_onnx_ml_label_encoder_(string_int|string_int_no_default|tensor_mapping|tensor_value_only_mapping)":
        _STRINGS,
    r"test_equal_string(_broadcast)?": _STRINGS,
    r"test_string_concat.*": _STRINGS,
    r"test_string_split_.*": _STRINGS,
    r"test_regex_full_match_.*": _STRINGS,
    r"test_strnormalizer_.*": _STRINGS,
    r"test_image_decoder_.*": "ImageDecoder decodes image files (JPEG/PNG/...): outside the tensor runtime's scope",
    r"test_bernoulli(_double|_seed)?(_expanded)?": RANDOM_OUTPUT,
    r"test_training_dropout(_default)?(_mask)?": RANDOM_OUTPUT,
    r"test_dft_inverse(_opset19)?": ("the expected data carries 1.9e-7 of float32 FFT rounding noise where the exact "
                                     "value is 0, above the test's atol of 1e-7; tensorkiln gives the exact 0"),
    r"test_attention_4d_causal_fp16_expanded": ("the expanded graph's fp16 Softmax accumulates in fp32 in tensorkiln "
                                                 "(a design rule for normalisations); the expected data used fp16 "
                                                 "accumulation and differs by 1 ulp"),
}

_COMPILED = [(re.compile(k), v) for k, v in EXCLUSIONS.items()]


def exclusion_reason(test_name: str) -> Optional[str]:
    for rx, reason in _COMPILED:
        if rx.fullmatch(test_name):
            return reason
    return None
