"""ONNX node tests tensorkiln does not pass, each with its reason.

Keys are regular expressions matched (re.fullmatch) against the test name. The test
suite runs excluded cases as strict expected failures, so an entry that starts passing
must be removed.
"""

from __future__ import annotations

import re
from typing import Optional

EXCLUSIONS: dict[str, str] = {
}

_COMPILED = [(re.compile(k), v) for k, v in EXCLUSIONS.items()]


def exclusion_reason(test_name: str) -> Optional[str]:
    for rx, reason in _COMPILED:
        if rx.fullmatch(test_name):
            return reason
    return None
