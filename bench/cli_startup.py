"""Fixed start-up of a one-shot `embedline ingest`: with its own temporary Prefect server, and against one
already running (what `make serve` gives), alternating, on a 20-document slice.

    python bench/cli_startup.py [--rounds 3] [--docs 20]

Each round runs the CLI in a fresh workspace twice: "one-shot" (no PREFECT_API_URL, no `make serve` reused,
so the command starts Prefect's temporary server on a thread while it loads the model) and "running
server" (PREFECT_API_URL of a `prefect server start` this bench started once, before timing). The
difference of the medians is what the one-shot path costs beyond a running server; the running-server
wall time itself is imports, the model load and the 20-document run. Prints the CPU flags and the load.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.incremental import write_slice  # noqa: E402
from bench.pipeline import cpu_flags  # noqa: E402
from bench.scale_out import free_port  # noqa: E402


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free loopback port with its own database; its API URL once it answers."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=1):
                return server, api
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("prefect server did not start within 120 s")


def timed_ingest(source: Path, home: Path, api: str | None, cache: Path | None = None) -> float:
    """Wall seconds of one `embedline ingest` in `home` (with a copy of `cache`: a user's warm one)."""
    if cache is not None:
        shutil.copytree(cache, home / "cache")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(EMBEDLINE_HOME=str(home), EMBEDLINE_LOCAL_PREFECT_URL="")  # not a `make serve` here
    if api:
        env["PREFECT_API_URL"] = api
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "embedline.flows.cli", "ingest", "startup", str(source)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ingest failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "cli_startup.json"))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="embedline-startup-"))
    source = root / "slice.jsonl"
    write_slice(source, args.docs)
    server, api = start_server(root)
    times: dict[str, list[float]] = {"one-shot": [], "running server": []}
    try:
        timed_ingest(source, root / "warm", api)  # first use: the converted model lands in its cache
        cache = root / "warm" / "cache"  # each timed home starts with it, as a user's second command does
        for i in range(args.rounds):
            times["one-shot"].append(timed_ingest(source, root / f"oneshot-{i}", None, cache))
            times["running server"].append(timed_ingest(source, root / f"server-{i}", api, cache))
    finally:
        os.killpg(server.pid, 15)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"docs": args.docs, "cpu_flags": cpu_flags(), "load_1min": os.getloadavg()[0],
              "seconds": {k: [round(t, 1) for t in v] for k, v in times.items()},
              "median_seconds": {k: round(v, 1) for k, v in medians.items()},
              "one_shot_extra_seconds": round(medians["one-shot"] - medians["running server"], 1)}
    print(f"`embedline ingest` of {args.docs} documents, whole command · CPU flags: "
          f"{result['cpu_flags']} · load {result['load_1min']:.1f}")
    for kind, values in result["seconds"].items():
        print(f"  {kind:15} median {result['median_seconds'][kind]:5.1f} s  (rounds {values})")
    print(f"  one-shot start-up beyond a running server: {result['one_shot_extra_seconds']:+.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
