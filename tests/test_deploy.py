"""The deployment files, parsed and checked for what must hold: every queue consumed, GPU workers
that ask for a GPU, exactly one beat, Redis with AOF and noeviction, KEDA scaling the right
Deployment on the right lists, secrets kept out of the manifests, and only settings Atelier knows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from shared.queue import (
    INTERACTIVE,
    MAINTENANCE,
    QUEUES,
    REAP_TASK,
    SCHEDULE_AUGMENT_TASK,
    TRAINING,
    WEBHOOKS,
    make_celery,
)
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPO = DEPLOY.parent
# environment variables the images and manifests may set that are not Atelier settings
OTHER_ENV = {"HOST", "WEB_CONCURRENCY", "WEB_THREADS", "POD_NAME", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
             "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "HF_HUB_OFFLINE", "NVIDIA_VISIBLE_DEVICES",
             "NVIDIA_DRIVER_CAPABILITIES", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
SECRETS = {"ATELIER_API_KEYS", "ATELIER_WEBHOOK_SECRET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}


def known_settings() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        names.update(field.validation_alias.choices)
    return names


def queues_of(command: list[str]) -> set[str]:
    if "worker" not in command or "--queues" not in command:
        return set()
    return set(command[command.index("--queues") + 1].split(","))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]
    listed = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(kustomization["resources"]), "every manifest is in the kustomization"
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def containers(k8s: dict) -> list[tuple[str, dict]]:
    return [(name, c) for (kind, name), doc in k8s.items() if kind in ("Deployment", "StatefulSet")
            for c in doc["spec"]["template"]["spec"]["containers"]]


def test_compose_services_and_guarantees(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "worker", "beat", "redis", "minio", "notifier"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["redis"]["volumes"], "the AOF lives on a volume"
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"] and gpu["count"] >= 1
    assert services["worker"]["build"]["dockerfile"].endswith("Dockerfile.cuda")
    consumed = set().union(*(queues_of(s.get("command", [])) for s in services.values()))
    assert consumed == set(QUEUES), "every queue has a consumer"
    assert "replicas" not in services["beat"].get("deploy", {})  # one beat
    assert services["api"]["healthcheck"] and "8000:8000" in services["api"]["ports"]
    env = compose["x-atelier-env"]
    assert set(env) <= known_settings() | OTHER_ENV, set(env) - known_settings() - OTHER_ENV
    for name in SECRETS:  # secrets are interpolated from the operator's .env, never written here
        assert str(env[name]).startswith("${"), name
    assert env["REDIS_URL"].startswith("redis://redis:") and env["S3_ENDPOINT_URL"] == "http://minio:9000"


def test_kubernetes_manifests(k8s: dict) -> None:
    api = k8s[("Deployment", "atelier-api")]
    pod = api["spec"]["template"]
    assert api["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    service = k8s[("Service", "atelier-api")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]

    worker = k8s[("Deployment", "atelier-worker-gpu")]["spec"]["template"]["spec"]
    (gpu_container,) = worker["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["terminationGracePeriodSeconds"] >= 300  # a running step can finish on scale-down
    assert any(t["key"] == "nvidia.com/gpu" for t in worker["tolerations"])

    beat = k8s[("Deployment", "atelier-beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"

    redis = k8s[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"

    consumed = set().union(*(queues_of(c.get("command", [])) for _, c in containers(k8s)))
    assert consumed == set(QUEUES), "every queue has a consumer"


@pytest.mark.parametrize(("name", "least"), [("atelier-worker-gpu", 1), ("atelier-trainer-gpu", 0)])
def test_keda_scales_the_gpu_workers_on_their_queues(k8s: dict, name: str, least: int) -> None:
    scaled = k8s[("ScaledObject", name)]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert ("Deployment", target) in k8s
    command = k8s[("Deployment", target)]["spec"]["template"]["spec"]["containers"][0]["command"]
    lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"}
    assert lists == queues_of(command) and MAINTENANCE not in lists  # the ticks are not GPU work
    assert least <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_no_process_makes_a_short_job_wait_behind_a_training(compose: dict, k8s: dict) -> None:
    """Finding 5: training is consumed apart from interactive jobs everywhere, and the reaper's and
    schedule's ticks ride their own queue, consumed by the light notifier process."""
    procfile = [shlex.split(cmd.split(": ", 1)[1]) for cmd in (REPO / "Procfile").read_text().splitlines()
                if ": " in cmd]
    commands = ([c.get("command", []) for c in compose["services"].values()] + procfile
                + [c.get("command", []) for _, c in containers(k8s)])
    for command in commands:
        queues = queues_of(command)
        assert not (TRAINING in queues and INTERACTIVE in queues), command
        assert MAINTENANCE not in queues or queues <= {MAINTENANCE, WEBHOOKS}, command
    routes = make_celery(Settings()).conf.task_routes
    assert routes[REAP_TASK] == routes[SCHEDULE_AUGMENT_TASK] == {"queue": MAINTENANCE}


def test_references_resolve_and_secrets_stay_in_the_secret(k8s: dict) -> None:
    secret = k8s[("Secret", "atelier-secrets")]
    assert set(secret["stringData"]) == SECRETS
    config = k8s[("ConfigMap", "atelier-config")]["data"]
    assert not SECRETS & set(config)
    assert set(config) <= known_settings(), set(config) - known_settings()
    for name, container in containers(k8s):
        for source in container.get("envFrom", []):
            kind, ref = ("ConfigMap", source["configMapRef"]["name"]) if "configMapRef" in source else (
                "Secret", source["secretRef"]["name"])
            assert (kind, ref) in k8s, f"{name} refers to a missing {kind} {ref}"
        for var in container.get("env", []):
            assert var["name"] in known_settings() | OTHER_ENV, f"{name}: unknown setting {var['name']}"
            assert var["name"] not in SECRETS, f"{name} sets a secret inline"
    claims = {doc["metadata"]["name"] for (kind, _), doc in k8s.items() if kind == "PersistentVolumeClaim"}
    for (kind, name), doc in k8s.items():
        if kind == "Deployment":
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, name


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles(name: str) -> None:
    text = (DEPLOY / "docker" / name).read_text()
    lines = [line for line in text.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    torch_pin = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert f"torch=={torch_pin}" in text, "the image installs the pinned torch"
    if name.endswith("cpu"):
        assert "download.pytorch.org/whl/cpu" in text  # not PyPI's CUDA build
    assert any(line.startswith("USER ") and line.split()[1] != "root" for line in lines)
    envs = {m.group(1) for line in lines if line.startswith("ENV ") for m in re.finditer(r"(\w+)=", line)}
    assert envs <= known_settings() | OTHER_ENV | {"PORT"}, envs - known_settings() - OTHER_ENV
    for line in lines:
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (REPO / source).exists(), source
    targets = re.findall(r"^FROM .* AS (\w+)$", text, re.M)
    assert "worker" in targets and (name.endswith("cuda") or "api" in targets)


def test_procfile_consumes_every_queue_and_flower_is_optional() -> None:
    entries = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if ": " in line)
    consumed = set().union(*(queues_of(shlex.split(cmd)) for cmd in entries.values()))
    assert consumed == set(QUEUES)
    from deploy.local.run import SERVICES

    assert "flower" in entries and "flower" not in SERVICES and set(SERVICES) <= set(entries)
