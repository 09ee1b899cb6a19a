"""The fields of a JSON export read with their types checked (COCO, Label Studio): a value
of the wrong type is named in one line, never a traceback or a silent negative."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.errors import DataError

# What each kind of field must be, as a message says it.
KINDS = {
    "id": "an integer or a string",
    "whole": "a whole number",
    "name": "a name",
    "number": "a finite number",
    "box": "four numbers [x, y, w, h]",
}


def read_json(path: Path):
    """The JSON a file holds, or one line naming the file: unreadable, or not JSON (where)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); fix or re-export the file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); re-export it"
        ) from None


def short(value) -> str:
    """`value` as a message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def typed(value, kind: str):
    """`value` as `kind`: "id" (an integer or a non-empty string), "whole" (an integer: 500,
    500.0, "500"), "name" (a non-empty string or number), "number" (finite, as a float),
    "box" (four finite numbers); None when it is not one."""
    if isinstance(value, bool):
        return None
    if kind == "id":
        return value if isinstance(value, int) or (isinstance(value, str) and value) else None
    if kind == "whole":
        if isinstance(value, float):
            return int(value) if value.is_integer() else None
        try:
            return int(value) if isinstance(value, int | str) else None
        except ValueError:
            return None
    if kind == "name":
        text = str(value).strip() if isinstance(value, int | str) else ""
        return text or None
    if kind == "number":
        return float(value) if _number(value) else None
    if not (isinstance(value, list) and len(value) == 4):  # a box
        return None
    return [float(v) for v in value] if all(map(_number, value)) else None
