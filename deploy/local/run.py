"""`make run`: start a local Valkey and SeaweedFS under var/ unless REDIS_URL / S3_ENDPOINT_URL
point elsewhere, then run the Procfile (web, worker, trainer, notifier, beat; flower too with
ATELIER_FLOWER=1) with honcho. Ctrl-C stops everything."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from deploy.local.servers import LocalStack

SERVICES = ["web", "worker", "trainer", "notifier", "beat"]


def webhook_secret(root: Path) -> str:
    """A development signing secret kept under var/, so webhooks work out of the box and signatures
    stay verifiable across restarts (production sets ATELIER_WEBHOOK_SECRET)."""
    path = root / "webhook-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    root = Path(os.environ.get("ATELIER_VAR", "var"))
    root.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(
        root,
        redis_port=int(os.environ.get("ATELIER_LOCAL_REDIS_PORT", "6379")),
        s3_port=int(os.environ.get("ATELIER_LOCAL_S3_PORT", "8333")),
    )
    need_redis = not os.environ.get("REDIS_URL")
    need_s3 = not os.environ.get("S3_ENDPOINT_URL")
    print(f"atelier: starting {'Valkey ' if need_redis else ''}{'SeaweedFS ' if need_s3 else ''}"
          f"under {root.resolve()}" if need_redis or need_s3 else "atelier: using the configured Redis and S3",
          flush=True)
    stack.start(redis=need_redis, s3=need_s3)
    env = {**os.environ, **stack.env, "PYTHONUNBUFFERED": "1",
           # the Procfile's commands (gunicorn, celery) live beside this interpreter
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if not env.get("ATELIER_WEBHOOK_SECRET"):
        env["ATELIER_WEBHOOK_SECRET"] = webhook_secret(root)
        print(f"atelier: webhook signing secret in {root.resolve() / 'webhook-secret'}", flush=True)
    for key, value in stack.env.items():
        if "SECRET" not in key:
            print(f"atelier: {key}={value}", flush=True)
    print(f"atelier: API on http://127.0.0.1:{env.get('PORT', '8000')}", flush=True)
    # honcho hands each process PORT = base + 100 * index; web is first in the Procfile, so it gets PORT
    services = SERVICES + (["flower"] if env.get("ATELIER_FLOWER") == "1" else [])
    honcho = [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-p", env.get("PORT", "8000"), *services]
    process = subprocess.Popen(honcho, env=env)

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (systemd, docker, kill) stops everything like Ctrl-C

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)  # honcho stops every process group it started
        return process.wait()
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
