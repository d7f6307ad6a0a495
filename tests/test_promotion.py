"""The promotion gate on known versions."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from shared.registry import ModelRegistry
from shared.schemas import ModelVersion
from shared.settings import Settings
from worker.handlers.common import publish
from worker.promotion import decide


def version(family: str, v: str, dataset: str = "catalog", **metrics: float) -> ModelVersion:
    return ModelVersion(family=family, version=v, ref=f"{family}@{v}", dataset=dataset, created_at=datetime.now(UTC),
                        job_id="j", metrics=metrics, vocabulary={}, active=True)


def summary(family: str, v: str, dataset: str = "catalog", **metrics: float) -> dict:
    return {"family": family, "version": v, "ref": f"{family}@{v}", "dataset": dataset, "metrics": metrics}


def test_operators_choose_and_the_first_version_is_active() -> None:
    assert decide(summary("cgan", "v2", fid=9.0), version("cgan", "v1", fid=3.0), "always").mode == "always"
    assert decide(summary("cgan", "v2", fid=1.0), version("cgan", "v1", fid=3.0), "never").mode == "never"
    assert decide(summary("cgan", "v1", fid=1.0), None, "auto").mode == "auto"


def test_auto_promotes_only_a_better_version() -> None:
    better = decide(summary("cgan", "v2", fid=2.0), version("cgan", "v1", fid=3.0), "auto")
    worse = decide(summary("cgan", "v2", fid=4.0), version("cgan", "v1", fid=3.0), "auto")
    assert better.mode == "always" and "fid 2 vs 3" in better.reason
    assert worse.mode == "never" and "not better" in worse.reason
    assert decide(summary("classifier", "v2", accuracy=0.9), version("classifier", "v1", accuracy=0.8),
                  "auto").mode == "always"  # higher is better
    assert decide(summary("lm", "v2", test_perplexity=6.0), version("lm", "v1", test_perplexity=5.0),
                  "auto").mode == "never"


def test_fallbacks_and_what_cannot_be_compared() -> None:
    # a cvae without a classifier's FID is compared on its held-out loss
    assert decide(summary("cvae", "v2", test_loss=90.0), version("cvae", "v1", test_loss=95.0, fid=4.0),
                  "auto").mode == "always"
    no_metric = decide(summary("cgan", "v2", g_loss=1.0), version("cgan", "v1", fid=3.0), "auto")
    assert no_metric.mode == "never" and "classifier" in no_metric.reason
    other_data = decide(summary("cvae", "v2", "fashion-mnist", fid=0.1), version("cvae", "v1", fid=3.0), "auto")
    assert other_data.mode == "never" and "not comparable" in other_data.reason


def test_a_blind_judge_withholds_fid_and_says_why() -> None:
    """An evaluation with a judge below the accuracy floor lists no FID: the cvae is compared on its
    held-out loss and the cgan is not compared at all, each with the reason in promotion.reason."""
    why = "the judge's held-out type accuracy 0.120 is below 0.6"
    cvae = decide(summary("cvae", "v2", test_loss=90.0, fid_withheld=why),
                  version("cvae", "v1", test_loss=95.0, fid=4.0), "auto")
    assert cvae.mode == "always" and "no FID verdict for cvae@v2" in cvae.reason and "test_loss" in cvae.reason
    cgan = decide(summary("cgan", "v2", fid_withheld=why), version("cgan", "v1", fid=3.0), "auto")
    assert cgan.mode == "never" and why in cgan.reason


def test_two_trainings_finishing_together_never_leave_the_worse_one_active(settings: Settings) -> None:
    """Finding 20: C (fid 2) is judged against A (fid 3) while B (fid 1) becomes active; the gate's
    verdict is applied only if A is still active, so C is judged again, against B, and stays out."""
    from types import SimpleNamespace

    client = redis.Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + "/15", decode_responses=True)
    client.flushdb()
    registry = ModelRegistry(client)
    full = {"created_at": "2026-12-02T00:00:00+00:00", "job_id": "j", "vocabulary": {}}
    a, b, c = ({**summary("cgan", v, fid=f), **full} for v, f in (("v1", 3.0), ("v2", 1.0), ("v3", 2.0)))
    assert registry.register(a, activate="auto")

    class RacingRegistry:
        """The real registry, except that B is activated right after C's gate first reads A."""

        def __init__(self) -> None:
            self.reads = 0

        def active(self, family: str) -> ModelVersion | None:
            seen = registry.active(family)
            self.reads += 1
            if self.reads == 1:
                registry.register(b, activate="always")
            return seen

        def __getattr__(self, name: str) -> object:
            return getattr(registry, name)

    racing = RacingRegistry()
    outcome = publish(SimpleNamespace(registry=racing), c, "auto")  # type: ignore[arg-type]
    assert registry.active("cgan").ref == "cgan@v2" and outcome["active"] is False
    assert "vs 1 for cgan@v2" in outcome["reason"] and racing.reads == 2
    again = publish(SimpleNamespace(registry=registry), b, "auto")  # a rerun of B's job: still active
    assert again["active"] is True
    client.flushdb()
