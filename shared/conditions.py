"""Map explicit conditions ({"class": "Dress"} or {"class": 3}) onto a model version's vocabulary.

Pure functions: the API uses them to reject bad input with a 422 naming the field, and the worker
uses them to turn names into the indices the model embeds.
"""

from __future__ import annotations

from shared.errors import ValidationFailed


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").lower().split())


def resolve_conditions(vocabulary: dict[str, list[str]], conditions: dict[str, str | int], *,
                       field_prefix: str = "input.conditions") -> dict[str, int]:
    """Return condition name -> index. Every condition the model has must be given, and nothing else."""
    resolved: dict[str, int] = {}
    for name, value in conditions.items():
        field = f"{field_prefix}.{name}"
        if name not in vocabulary:
            raise ValidationFailed(
                f"this model has no condition {name!r}; it takes {sorted(vocabulary)}",
                code="unknown_condition", field=field)
        values = vocabulary[name]
        if isinstance(value, int):
            if not 0 <= value < len(values):
                raise ValidationFailed(f"{name} index must be 0..{len(values) - 1}", field=field)
            resolved[name] = value
            continue
        lookup = {_norm(v): i for i, v in enumerate(values)}
        index = lookup.get(_norm(value))
        if index is None:
            raise ValidationFailed(
                f"{value!r} is not a {name} this model knows; known values: {', '.join(values)}",
                code="unknown_condition_value", field=field, details={"known": values})
        resolved[name] = index
    missing = sorted(set(vocabulary) - set(resolved))
    if missing:
        raise ValidationFailed(f"missing condition(s) {missing}; this model needs {sorted(vocabulary)}",
                               code="missing_condition", field=f"{field_prefix}.{missing[0]}")
    return resolved
