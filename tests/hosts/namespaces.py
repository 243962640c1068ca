"""Several "hosts" on one machine: network namespaces joined to the root namespace by veth pairs.

Host n lives in namespace `embedline-<pid>-<n>` with address 10.231.<x>.2; the root side of its veth
pair is 10.231.<x>.1. The services (Postgres, S3, the Prefect API) listen on the first pair's root side,
and every namespace has a route to that one address and nothing else: no default route, so nothing
outside the machine is ever reached. Names carry the creating process's id, so a crashed earlier run
never collides; namespaces of dead creators are swept at the next start.

A host's processes also get a mount namespace of their own in which the harness's folder is hidden
behind an empty tmpfs except the host's own folder and the shared input data: hosts share no files.
"""

import ipaddress
import os
import random
import re
import shlex
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^embedline-(\d+)-\d+$")
SUBNETS = "10.231.0.0/16"


@dataclass(frozen=True)
class Namespace:
    name: str
    root_address: str  # the root namespace's end of the veth pair
    address: str  # the host's own address inside the namespace


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def namespace_problem() -> str | None:
    """None where namespaces can be made here; else why not, as a sentence (the skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); this user is not root"
    probe = f"embedline-probe-{uuid.uuid4().hex[:8]}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {(made.stderr or made.stdout).strip()}"
    _ip("netns", "delete", probe)
    unshared = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True, timeout=30)
    if unshared.returncode != 0:
        return f"`unshare --mount` failed here: {unshared.stderr.strip()}"
    return None


def sweep_stale() -> None:
    """Delete namespaces left by earlier runs whose process is gone (their veth pairs go with them)."""
    for line in _ip("netns", "list").stdout.splitlines():
        match = NAME.match(line.split()[0]) if line.strip() else None
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _ip("netns", "delete", line.split()[0])


def _free_subnets(count: int) -> list[int]:
    """Third octets of 10.231.x.0/24 that no interface uses now."""
    used = set()
    for address in re.findall(r"inet (10\.231\.\d+\.\d+)", _ip("-o", "-4", "addr").stdout):
        used.add(int(address.split(".")[2]))
    free = [x for x in range(1, 255) if x not in used]
    if len(free) < count:
        raise RuntimeError(f"fewer than {count} free /24 subnets in {SUBNETS}")
    return random.sample(free, count)


def make_namespaces(count: int) -> list[Namespace]:
    """`count` namespaces, each with loopback up and a veth pair to the root namespace; every one
    routes to the first pair's root address (where the services listen). On failure, none is left."""
    sweep_stale()
    made: list[Namespace] = []
    try:
        for n, x in enumerate(_free_subnets(count)):
            ns = Namespace(f"embedline-{os.getpid()}-{n}", f"10.231.{x}.1", f"10.231.{x}.2")
            outer, inner = f"elh{os.getpid() % 100000}o{n}", f"elh{os.getpid() % 100000}i{n}"
            _run_ip("netns", "add", ns.name)
            made.append(ns)
            _run_ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _run_ip("link", "set", inner, "netns", ns.name)
            _run_ip("addr", "add", f"{ns.root_address}/24", "dev", outer)
            _run_ip("link", "set", outer, "up")
            _run_ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", inner)
            _run_ip("-n", ns.name, "link", "set", inner, "up")
            _run_ip("-n", ns.name, "link", "set", "lo", "up")
        service = made[0].root_address
        for ns in made[1:]:
            _run_ip("-n", ns.name, "route", "add", f"{service}/32", "via", ns.root_address)
    except BaseException:
        remove_namespaces(made)
        raise
    assert all(ipaddress.ip_address(ns.address) in ipaddress.ip_network(SUBNETS) for ns in made)
    return made


def _run_ip(*args: str) -> None:
    result = _ip(*args)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {(result.stderr or result.stdout).strip()}")


def remove_namespaces(namespaces: list[Namespace]) -> None:
    """Delete them (a namespace's veth end goes with it, and takes its root-side peer along)."""
    for ns in namespaces:
        _ip("netns", "delete", ns.name)


def in_namespace(ns: Namespace, root: Path, keep: list[Path], argv: list[str]) -> list[str]:
    """`argv` run in `ns`, in a mount namespace where `root` is an empty tmpfs except the `keep` folders
    under it (the host's own folder, the input data)."""
    stash = root.with_name(root.name + "-stash")  # outside `root`: shows root's real content meanwhile
    stash.mkdir(exist_ok=True)
    steps = [f"mount --bind {shlex.quote(str(root))} {shlex.quote(str(stash))}",
             f"mount -t tmpfs -o mode=0755 embedline-host {shlex.quote(str(root))}"]
    for folder in keep:
        relative = shlex.quote(str(folder.relative_to(root)))
        steps += [f"mkdir -p {shlex.quote(str(root))}/{relative}",
                  f"mount --bind {shlex.quote(str(stash))}/{relative} {shlex.quote(str(root))}/{relative}"]
    steps += [f"umount -l {shlex.quote(str(stash))}", 'exec "$@"']
    script = "set -e; " + "; ".join(steps)
    return ["ip", "netns", "exec", ns.name, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", *argv]
