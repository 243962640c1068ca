"""A throwaway PostgreSQL from Debian's packages on a free loopback port: for tests and benchmarks."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def running_postgres(listen: tuple[str, ...] = ("127.0.0.1",), trusted: tuple[str, ...] = (),
                     password: str | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL from Debian's packages on a free port of `listen`, its base URL (on the first
    address; role `embedline`); clients from the `trusted` networks (CIDR) connect without a password too.
    With `password`, TCP clients must give it (scram-sha-256; the URL carries none): the server's own
    socket stays trusted."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (make test does it)")
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="embedline-pg-"))  # not under pytest's 0700 root-owned folder
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "embedline", "-E", "UTF8",
              "--no-sync"]
    if password is not None:
        (root / "password").write_text(password)
        initdb += ["--auth-host=scram-sha-256", f"--pwfile={root / 'password'}"]
    subprocess.run(_as_server_user(initdb), check=True, capture_output=True, cwd=root)
    if trusted:
        with open(data / "pg_hba.conf", "a") as hba:
            hba.writelines(f"host all all {network} trust\n" for network in trusted)
    for attempt in range(3):  # a free port may be taken between choosing it and binding it
        port = _free_port(listen[0])
        options = (f"-p {port} -k {root} -c listen_addresses={','.join(listen)} -c fsync=off "
                   "-c max_connections=200")
        start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
                 "start"]
        if subprocess.run(_as_server_user(start), capture_output=True, cwd=root).returncode == 0:
            break
    else:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start:\n{log[-2000:]}")
    try:
        yield f"postgresql://embedline@{listen[0]}:{port}"
    finally:
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new, empty database on the server; its URL."""
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server_url}/{name}"
