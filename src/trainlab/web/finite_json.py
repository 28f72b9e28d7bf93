"""JSON for the web apps: NaN and infinity (a diverged run's losses) become null, never a 500."""

from __future__ import annotations

import json
import math

from fastapi.responses import JSONResponse


def finite(value):
    """`value` with every NaN and infinity made None: JSON has no such numbers (a diverged run's
    history holds them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class FiniteJSONResponse(JSONResponse):
    """The apps' response class: standard JSON, NaN and infinity sent as null."""

    def render(self, content) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
