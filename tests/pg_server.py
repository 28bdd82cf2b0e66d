"""A throwaway PostgreSQL server for the tests.

``PostgresServer`` runs ``initdb`` into a temporary directory and starts a real server
on 127.0.0.1 (a free port) plus a unix socket in that directory, tuned for speed
(``fsync=off`` and friends) with trust authentication. ``stop()`` shuts it down with
``pg_ctl stop -m immediate`` and removes the directory.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
(via ``runuser``) and the directory is handed to that user.

If ``GOLDENLOOP_TEST_DATABASE_URL`` is set, that server is used instead and nothing is
started or stopped.

Usage::

    with PostgresServer() as server:
        psycopg.connect(server.url)
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

ENV_URL = "GOLDENLOOP_TEST_DATABASE_URL"
SERVER_USER = "postgres"

_INSTALL_HINT = (
    "Install the Debian package `postgresql` (`apt-get install -y postgresql`; "
    "./scripts/test does this), or point GOLDENLOOP_TEST_DATABASE_URL at a running server."
)

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "max_wal_size": "1GB",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
    # Autovacuum workers visiting template1 make every CREATE DATABASE wait ~100 ms.
    "autovacuum": "off",
}


class PostgresServerError(RuntimeError):
    """The test server could not be found or started; the message says why."""


def find_bindir() -> Path:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version wins)."""
    candidates: list[Path] = []
    explicit = os.environ.get("GOLDENLOOP_TEST_PG_BINDIR")
    if explicit:
        candidates.append(Path(explicit))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin$", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    ]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresServerError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found in "
        f"{', '.join(map(str, candidates)) or '/usr/lib/postgresql/*/bin'}. {_INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traversable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _pick_base_dir(*, as_other_user: bool) -> str:
    """Where the data directory goes: RAM (/dev/shm) when there is room, since copying
    template1 for each test database is I/O bound; else the usual temp directory."""
    candidates = ["/dev/shm", tempfile.gettempdir(), "/tmp"]
    for base in candidates:
        path = Path(base)
        try:
            usable = path.is_dir() and os.access(path, os.W_OK | os.X_OK)
            if usable and base == "/dev/shm":
                usable = shutil.disk_usage(path).free >= 1 << 30
            if usable and as_other_user:
                usable = _traversable_by_others(path)  # the postgres user must reach it
        except OSError:
            usable = False
        if usable:
            return base
    return tempfile.gettempdir()


class PostgresServer:
    """A PostgreSQL server for one test session; ``url`` connects as ``postgres``."""

    def __init__(self) -> None:
        self.external = bool(os.environ.get(ENV_URL))
        self.url = os.environ.get(ENV_URL, "")
        self.port = 0
        self.dir: Path | None = None
        self._bindir: Path | None = None
        self._running = False
        self._as_user: pwd.struct_passwd | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> PostgresServer:
        if self.external or self._running:
            return self
        self._bindir = find_bindir()
        if os.geteuid() == 0:
            try:
                self._as_user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresServerError(
                    f"running as root, but there is no {SERVER_USER!r} user to run "
                    f"PostgreSQL as. {_INSTALL_HINT}"
                ) from None
        self.dir = self._make_dir()
        try:
            self._initdb()
            for attempt in range(3):
                self.port = _free_port()
                self._write_config()
                try:
                    self._run("pg_ctl", "-D", str(self.dir / "data"), "-l",
                              str(self.dir / "server.log"), "-w", "-t", "60", "start")  # fmt: skip
                    break
                except PostgresServerError:
                    if attempt == 2:
                        raise
            self._running = True
        except BaseException:
            self._cleanup_dir()
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._running and self.dir is not None:
            try:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w",
                          "stop")  # fmt: skip
            except PostgresServerError:
                pass
            self._running = False
        self._cleanup_dir()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        assert self.dir is not None
        return self.dir

    def _make_dir(self) -> Path:
        base = _pick_base_dir(as_other_user=self._as_user is not None)
        path = Path(tempfile.mkdtemp(prefix="goldenloop-pg-", dir=base))
        if self._as_user is not None:
            os.chown(path, self._as_user.pw_uid, self._as_user.pw_gid)
        return path

    def _cleanup_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _initdb(self) -> None:
        assert self.dir is not None
        self._run("initdb", "-D", str(self.dir / "data"), "-U", SERVER_USER, "-A", "trust",
                  "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")  # fmt: skip

    def _write_config(self) -> None:
        assert self.dir is not None
        settings = {
            **_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
        }
        conf = self.dir / "data" / "postgresql.auto.conf"
        conf.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        if self._as_user is not None:
            os.chown(conf, self._as_user.pw_uid, self._as_user.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        assert self._bindir is not None and self.dir is not None
        command = [str(self._bindir / tool), *args]
        if self._as_user is not None:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        env.pop("PGDATA", None)
        try:
            result = subprocess.run(
                command, cwd=self.dir, env=env, capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresServerError(f"{tool} failed to run: {exc}") from exc
        if result.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresServerError(
                f"{' '.join(command)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n{tail}".rstrip()
            )
