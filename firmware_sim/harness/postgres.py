"""Private PostgreSQL clusters for tests and benches that stop, restart or break a database.

The shared server on 127.0.0.1:5432 is never touched: each cluster is made by
``initdb`` from the installed binaries in its own temporary directory and run
by ``pg_ctl`` on a free port, listening on 127.0.0.1 and on a Unix socket in
that directory.

PostgreSQL refuses to run as root. Run as root (as here and in CI), the
cluster is made and run as the ``postgres`` OS user (``runuser``, else
``setpriv``), in a directory under the system temp dir that it owns: pytest's
own temp dirs are private to root and postgres could not enter them. As any
other user it simply runs as that user.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from firmware_sim.harness.net import free_port

SERVICE_USER = "postgres"
_START_ATTEMPTS = 3
_PG_CTL_TIMEOUT_S = 60


class ClusterUnavailable(Exception):
    """No private cluster can be made here; the message says why."""


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs a server program, and the user it runs as."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ClusterUnavailable(
            f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL as"
        ) from None
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVICE_USER, "--"], user
    if shutil.which("setpriv"):
        return [
            "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"
        ], user  # fmt: skip
    raise ClusterUnavailable("running as root and neither runuser nor setpriv is installed")


def _base_dir(*, for_other_user: bool) -> str:
    """Where to make the cluster's directory.

    The server's Unix socket path must stay short (about 100 bytes at most),
    and a server run as another user must be able to reach the directory.
    """
    for candidate in (tempfile.gettempdir(), "/tmp"):
        path = Path(candidate).resolve()
        if len(str(path)) > 60:
            continue
        if for_other_user and any(p.stat().st_mode & 0o001 == 0 for p in (path, *path.parents)):
            continue
        return str(path)
    raise ClusterUnavailable("no temporary directory that a PostgreSQL server could use")


def _openssl_certificate(cert: Path, key: Path) -> None:
    """A self-signed certificate for localhost and 127.0.0.1, usable as its own root."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


@dataclass
class PrivateCluster:
    """One PostgreSQL cluster in a temporary directory; stop, start and destroy at will."""

    root: Path
    port: int
    tls: bool
    pg_ctl: str
    prefix: list[str]
    running: bool = False
    extra_options: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, *, tls: bool = False) -> PrivateCluster:
        """initdb a new cluster (not started); raise ClusterUnavailable if it cannot be."""
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise ClusterUnavailable("initdb/pg_ctl not found (PostgreSQL server not installed)")
        if tls and shutil.which("openssl") is None:
            raise ClusterUnavailable("openssl not found, needed for a TLS test cluster")
        prefix, user = _run_as()
        root = Path(tempfile.mkdtemp(prefix="smiley-pg-", dir=_base_dir(for_other_user=bool(user))))
        try:
            if tls:
                _openssl_certificate(root / "server.crt", root / "server.key")
                (root / "server.key").chmod(0o600)
            if user is not None:
                for path in (root, *root.iterdir()):
                    os.chown(path, user.pw_uid, user.pw_gid)
            result = subprocess.run(
                [*prefix, initdb, "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise ClusterUnavailable(f"initdb failed: {result.stderr.strip()[-2000:]}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(root=root, port=free_port(), tls=tls, pg_ctl=pg_ctl, prefix=prefix)

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def _options(self) -> str:
        options = [
            f"-k {self.root}",
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            "-c fsync=off",  # a test cluster: durability against power loss is not tested here
            "-c max_connections=200",
            "-c shared_buffers=64MB",
        ]
        if self.tls:
            options += [
                "-c ssl=on",
                f"-c ssl_cert_file={self.root / 'server.crt'}",
                f"-c ssl_key_file={self.root / 'server.key'}",
            ]
        return " ".join(options + self.extra_options)

    def _pg_ctl(self, *args: str) -> list[str]:
        return [*self.prefix, self.pg_ctl, "-D", str(self.root / "data"), *args]

    def _start_command(self) -> list[str]:
        return self._pg_ctl(
            "-w", "-t", str(_PG_CTL_TIMEOUT_S), "-l", str(self.log), "-o", self._options(), "start"
        )

    def _stop_command(self, mode: str) -> list[str]:
        return self._pg_ctl("-w", "-t", str(_PG_CTL_TIMEOUT_S), "-m", mode, "stop")

    def start(self) -> None:
        """Start (blocking); on a first start, a port taken meanwhile is replaced."""
        for attempt in range(_START_ATTEMPTS):
            result = subprocess.run(
                self._start_command(), capture_output=True, text=True, check=False, timeout=120
            )
            if result.returncode == 0:
                self.running = True
                return
            if attempt + 1 < _START_ATTEMPTS:
                self.port = free_port()
        raise ClusterUnavailable(f"pg_ctl start failed: {self._log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop (blocking); ``fast`` ends every session, ``immediate`` is a crash."""
        subprocess.run(self._stop_command(mode), capture_output=True, check=False, timeout=120)
        self.running = False

    async def astart(self) -> None:
        """Start again on the same port, without blocking the event loop."""
        await self._run_async(self._start_command())
        self.running = True

    async def astop(self, mode: str = "fast") -> None:
        await self._run_async(self._stop_command(mode))
        self.running = False

    async def _run_async(self, command: list[str]) -> None:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[-1:])} failed: {output.decode(errors='replace')}"
                f"\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return "(no server log)"

    def destroy(self) -> None:
        if self.running or (self.root / "data" / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
