"""Strict JSON for request bodies: standard JSON only (no NaN or Infinity, which Python's parser
accepts), and a nesting limit, so `[[[[…` a hundred thousand deep is a 400 rather than a
RecursionError and a 500."""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:  # breadth-first, so measuring the depth cannot itself recurse
        depth += 1
        if depth > MAX_DEPTH:
            return depth
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
        level = [item for item in level if isinstance(item, dict | list)]
    return depth


class StrictJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = json.loads(s, parse_constant=_refuse_constant, **kwargs)
        except RecursionError as exc:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from exc
        if _depth(value) > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return value
