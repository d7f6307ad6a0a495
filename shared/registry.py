"""Model versions: artifacts live in object storage under models/<family>/<version>/, and this
registry (Redis) lists them and says which version of each family is active."""

from __future__ import annotations

import json
from typing import Any

import redis

from shared.errors import Conflict, NotFound
from shared.schemas import MODEL_REF, ModelVersion

_KEY = "atelier:models:versions:{family}"
_SEQ = "atelier:models:seq:{family}"  # the last version number handed out (JobStore.model_version_for)
_ACTIVE = "atelier:models:active"
_FAMILIES = "atelier:models:families"

# Atomically: record the version; activate it when asked, or when the family has none yet.
# ARGV: family, version, summary, mode, the active version the decision was made against ('' when
# not conditional). Returns 1 active, 0 not, -1 the active version changed since: decide again.
_REGISTER = """
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[4] == 'always' then
  if ARGV[5] ~= '' and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[5] then return -1 end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
elseif ARGV[4] == 'auto' then
  return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
end
return 0
"""


# Never hand out a number object storage already holds: raise the counter to at least ARGV[1].
_RAISE_SEQ = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
"""


def model_prefix(family: str, version: str) -> str:
    return f"models/{family}/{version}/"


def feature_index_key(dataset: str, classifier_ref: str) -> str:
    """Where a dataset's nearest-item index under one classifier version is kept."""
    family, version = parse_ref(classifier_ref)
    return f"indexes/{dataset}/{family}-{version}.npz"


def parse_ref(ref: str) -> tuple[str, str]:
    match = MODEL_REF.match(ref)
    if not match:
        raise ValueError(f"bad model reference {ref!r}")
    return match["family"], match["version"]


class ModelRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._register = client.register_script(_REGISTER)
        self._raise_seq = client.register_script(_RAISE_SEQ)

    def register(self, summary: dict[str, Any], *, activate: str = "auto",
                 instead_of: str | None = None) -> bool | None:
        """Record a finished version (idempotent on rerun). Returns whether it is now active; with
        `instead_of` (activate "always" only if that version is still the active one, in the same
        Redis step), None when another version became active meanwhile."""
        family, version = summary["family"], summary["version"]
        result = self._register(keys=[_KEY.format(family=family), _ACTIVE, _FAMILIES],
                                args=[family, version, json.dumps(summary), activate, instead_of or ""])
        return None if result == -1 else bool(result)

    def get(self, family: str, version: str) -> ModelVersion | None:
        raw = self.redis.hget(_KEY.format(family=family), version)
        if raw is None:
            return None
        active = self.redis.hget(_ACTIVE, family) == version
        return ModelVersion(**json.loads(raw), active=active)

    def active(self, family: str) -> ModelVersion | None:
        version = self.redis.hget(_ACTIVE, family)
        return self.get(family, version) if version else None

    def resolve(self, ref: str | None, default_family: str, field: str = "input.model") -> ModelVersion:
        """A model reference ("cvae@v2") or the active version of the default family; errors name
        `field`, the input that asked for the model."""
        if ref:
            family, version = parse_ref(ref)
            found = self.get(family, version)
            if found is None:
                raise NotFound(f"model {ref} does not exist; GET /v1/models lists them",
                               code="model_not_found", field=field)
            return found
        found = self.active(default_family)
        if found is None:
            raise Conflict(f"no {default_family} model is active yet: submit a train job first",
                           code="no_active_model", field=field)
        return found

    def list(self, family: str | None = None) -> list[ModelVersion]:
        active = self.redis.hgetall(_ACTIVE)
        families = [family] if family else sorted(self.redis.smembers(_FAMILIES))
        out = []
        for fam in families:
            for version, raw in self.redis.hgetall(_KEY.format(family=fam)).items():
                out.append(ModelVersion(**json.loads(raw), active=active.get(fam) == version))
        return sorted(out, key=lambda m: (m.family, int(m.version[1:])), reverse=False)

    def for_dataset(self, families: tuple[str, ...], dataset: str,
                    vocabulary: dict[str, list[str]] | None = None) -> ModelVersion | None:
        """The version to use on `dataset` among `families` (in order of preference): an active one
        trained on it, else the newest trained on it; with `vocabulary`, only versions whose
        conditions mean the same classes. None when nothing was trained on it."""
        same = [m for family in families for m in self.list(family)
                if m.dataset == dataset and (vocabulary is None or m.vocabulary == vocabulary)]
        active = next((m for m in same if m.active), None)
        return active or max(same, key=lambda m: m.created_at, default=None)

    def is_empty(self) -> bool:
        return not self.redis.exists(_FAMILIES)

    def restore(self, storage: Any) -> list[str]:
        """Rebuild the registry from the versions in object storage (each `model.json` is written last,
        so it means a complete version) after Redis lost it: versions come back inactive (an operator
        activates), and each family's counter moves past the highest stored number so a new training
        run never reuses one. Returns the versions restored."""
        restored = []
        for key in storage.list("models/"):
            if not key.endswith("/model.json"):
                continue
            summary = storage.get_json(key)
            family, version = summary["family"], summary["version"]
            if self.redis.hget(_KEY.format(family=family), version) is None:
                self.register(summary, activate="never")
                restored.append(summary["ref"])
            self._raise_seq(keys=[_SEQ.format(family=family)], args=[int(version.lstrip("v"))])
        return restored

    def activate(self, family: str, version: str) -> ModelVersion:
        if self.redis.hget(_KEY.format(family=family), version) is None:
            raise NotFound(f"model {family}@{version} does not exist", code="model_not_found")
        self.redis.hset(_ACTIVE, family, version)
        found = self.get(family, version)
        assert found is not None
        return found
