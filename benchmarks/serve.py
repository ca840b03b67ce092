"""Benchmark: ``pedattr serve`` under load and under bad requests, beside offline prediction.

1. Offline: :class:`pedattr.Predictor` over the image files at batch 32, each record made a
   JSON line, as ``pedattr predict --json --batch-size 32`` runs (decoding threads, forward,
   records, the allocator setting of :func:`pedattr.utils.allocator.keep_freed_memory`);
   images per second after one untimed batch.
2. Served: ``pedattr serve`` started as a subprocess with the same checkpoint, device and
   threads; ``--clients`` concurrent aiohttp clients (1, 8, 32 by default), each posting one
   image per request (multipart) in a loop, ``--requests`` requests per level after a warm-up;
   requests per second (= images per second), the p50 / p99 latency and the CPU time the
   server's processes spent per image.

   The figure of merit is served / offline throughput at the highest concurrency (goal: at
   least 0.8). A small VM's speed drifts by tens of per cent within a minute, so the two are
   measured in ``--rounds`` rounds (5 by default), each an offline run directly followed by a
   served one (the idle service uses no CPU meanwhile); the ratio of each round is printed and
   their median is the figure. The same ratio by CPU time per image is printed too.
3. Bad requests: ``--bad`` bad requests (not an image, truncated, a decompression bomb, empty,
   over the size limit, wrong content type, unknown field, bad base64, too many pixels) mixed
   at random with a quarter as many good ones, 8 clients at once; it reports good requests that
   failed (must be 0), bad ones not answered 4xx, whether the service is still healthy, and
   the growth of its resident memory (the server and all its processes; goal under 10 %).

Clients and server share the machine: on a 2-core CPU the clients' own work is part of what
the server competes with, as it would be for a sidecar. Run it on a quiet machine.

Usage:
    python benchmarks/serve.py                      # the demo's (make demo) checkpoint, images
    python benchmarks/serve.py --checkpoint CKPT --images DIR --device cuda
    python benchmarks/serve.py --clients 1,8 --requests 200 --bad 200 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import aiohttp
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import command_line, load_average  # noqa: E402

from pedattr.inference.predictor import Predictor  # noqa: E402
from pedattr.utils.allocator import keep_freed_memory  # noqa: E402

#: What `make demo` (`pedattr demo --out runs/demo`) writes.
DEMO = Path(__file__).resolve().parents[1] / "runs" / "demo"
GOAL_RATIO = 0.8
GOAL_MEMORY_GROWTH = 0.10
#: The server's body limit here: small, so that over-the-limit requests are cheap to send.
MAX_REQUEST_SIZE = 2**20


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        default=str(DEMO / "run" / "best.safetensors"),
        help="default: the demo's, runs/demo/run/best.safetensors",
    )
    parser.add_argument(
        "--images", default=str(DEMO / "data" / "images"), help="default: the demo's images"
    )
    parser.add_argument("--count", type=int, default=256, help="images used (default 256)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument(
        "--requests", type=int, default=640, help="timed requests per level (default 640)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="offline and served runs at the highest concurrency, in turn (default 5)",
    )
    parser.add_argument("--bad", type=int, default=1000, help="bad requests sent (default 1000)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=1, help="inference workers (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of the offline run and of each server worker (sets "
        "OMP_NUM_THREADS; default: as the environment says)",
    )
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


# --- offline ----------------------------------------------------------------------------------


def offline_predictor(args: argparse.Namespace, files: list[Path]) -> Predictor:
    """The Predictor `pedattr predict --batch-size 32` runs, after one untimed batch."""
    keep_freed_memory()  # as `pedattr predict` does
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, batch_size=32)
    list(predictor.predict_iter(files[:32]))
    return predictor


def offline_figures(predictor: Predictor, files: list[Path]) -> dict:
    """Images per second (and CPU milliseconds per image) of the Predictor at batch 32 over
    the files, each record made a JSON line, as `pedattr predict --json` does."""
    start, cpu = time.perf_counter(), time.process_time()
    # What `pedattr predict --json` does with each prediction: its record as a JSON line.
    lines = [json.dumps(r.to_dict(), allow_nan=False) for r in predictor.predict_iter(files)]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(lines) == len(files)
    return {"images_per_second": len(files) / seconds, "cpu_ms_per_image": 1000 * cpu / len(files)}


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "pedattr", "serve", "--checkpoint", args.checkpoint]
    command += ["--port", str(port), "--device", args.device, "--engine", args.engine]
    command += ["--max-batch-size", str(args.max_batch_size)]
    command += ["--batch-timeout", str(args.batch_timeout), "--workers", str(args.workers)]
    command += ["--max-request-size", str(MAX_REQUEST_SIZE)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


async def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"pedattr serve exited with {process.returncode}")
            try:
                async with session.get(f"{url}/health") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit("pedattr serve did not become healthy")


def family(pid: int) -> list[psutil.Process]:
    """A process and all its descendants still running."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process and its descendants have used so far."""
    total = 0.0
    for member in family(pid):
        with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
            times = member.cpu_times()
            total += times.user + times.system
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


# --- load -------------------------------------------------------------------------------------


def image_form(name: str, data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    return form


async def drive(url: str, images: list[tuple[str, bytes]], clients: int, total: int) -> dict:
    """``clients`` concurrent clients sending ``total`` one-image requests; latencies."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal failures
            for k in counter:
                name, data = images[k % len(images)]
                start = time.perf_counter()
                async with session.post(f"{url}/predict", data=image_form(name, data)) as answer:
                    await answer.read()
                    failures += answer.status != 200
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    latencies.sort()
    return {
        "clients": clients,
        "requests": total,
        "failed": failures,
        "images_per_second": total / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


# --- bad requests -----------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height pixels and holding none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))


def bad_requests(good: bytes) -> dict[str, dict]:
    """aiohttp keyword arguments of each kind of bad request."""
    json_type = {"Content-Type": "application/json"}
    return {
        "not an image": {"data": image_form("notes.txt", b"plain text, not pixels")},
        "truncated": {"data": image_form("cut.png", good[: len(good) // 2])},
        "decompression bomb": {"data": image_form("bomb.png", png_header(30_000, 10_000))},
        "too many pixels": {"data": image_form("big.png", png_header(6_000, 5_000))},
        "empty body": {"data": b"", "headers": json_type},
        "over the size limit": {"data": b"x" * (MAX_REQUEST_SIZE + 1), "headers": json_type},
        "wrong content type": {"data": good, "headers": {"Content-Type": "image/png"}},
        "unknown field": {"json": {"images": [], "extra": 1}},
        "bad base64": {"json": {"images": ["***"]}},
        "not JSON": {"data": b"{nope", "headers": json_type},
    }


async def mixed(url: str, good: list[tuple[str, bytes]], bad: int) -> dict:
    """``bad`` bad requests and bad / 4 good ones in random order, 8 clients at once."""
    kinds = list(bad_requests(good[0][1]))
    plan = [("bad", kinds[k % len(kinds)]) for k in range(bad)]
    plan += [("good", k) for k in range(bad // 4)]
    random.Random(0).shuffle(plan)
    counts = {"good_failed": 0, "bad_not_4xx": 0, "bad_connection_closed": 0}
    queue = iter(plan)
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for what, which in queue:
                if what == "good":
                    name, data = good[which % len(good)]
                    try:
                        async with session.post(
                            f"{url}/predict", data=image_form(name, data)
                        ) as answer:
                            await answer.read()
                            counts["good_failed"] += answer.status != 200
                    except aiohttp.ClientError:
                        counts["good_failed"] += 1
                    continue
                options = bad_requests(good[0][1])[which]
                try:
                    async with session.post(f"{url}/predict", **options) as answer:
                        await answer.read()
                        counts["bad_not_4xx"] += not 400 <= answer.status < 500
                except aiohttp.ClientError:  # refused while still sending (over the limit)
                    counts["bad_connection_closed"] += 1

        await asyncio.gather(*(client() for _ in range(8)))
    return counts


async def served_level(
    url: str, pid: int, images: list[tuple[str, bytes]], clients: int, requests: int
) -> dict:
    """One concurrency level's figures, with the server's CPU time per image."""
    cpu = tree_cpu(pid)
    level = await drive(url, images, clients, requests)
    level["cpu_ms_per_image"] = 1000 * (tree_cpu(pid) - cpu) / requests
    return level


async def served_figures(
    args: argparse.Namespace, images: list[tuple[str, bytes]], files: list[Path]
) -> dict:
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(args, port)
    try:
        predictor = offline_predictor(args, files)  # while the service loads
        await wait_healthy(url, process)
        *lower, top = [int(c) for c in args.clients.split(",")]
        levels = []
        for clients in lower:
            await drive(url, images, clients, max(2 * clients, 64))  # warm-up
            levels.append(await served_level(url, process.pid, images, clients, args.requests))
        await drive(url, images, top, max(2 * top, 64))  # warm-up
        rounds = []
        for _ in range(args.rounds):
            offline = offline_figures(predictor, files)
            served = await served_level(url, process.pid, images, top, args.requests)
            rounds.append({"offline": offline, "served": served})
        await mixed(url, images, min(args.bad, 100))  # warm-up: caches and allocators settle
        before = tree_rss(process.pid)
        counts = await mixed(url, images, args.bad)
        after = tree_rss(process.pid)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/health") as health,
        ):
            healthy = health.status == 200
        bad = {
            "bad_requests": args.bad,
            "good_requests": args.bad // 4,
            **counts,
            "alive": process.poll() is None and healthy,
            "rss_before_mb": before / 2**20,
            "rss_after_mb": after / 2**20,
            "rss_growth": after / before - 1,
        }
        return {"levels": levels, "rounds": rounds, "bad": bad}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    args = parse_arguments()
    if args.threads is not None:  # before torch starts its thread pool; the server inherits it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    files = sorted(Path(args.images).glob("*.png"))[: args.count]
    if not files:
        raise SystemExit(f"{args.images}: no PNG images")
    images = [(f.name, f.read_bytes()) for f in files]
    load = load_average()
    served = asyncio.run(served_figures(args, images, files))
    rounds = served.pop("rounds")
    ratios = [r["served"]["images_per_second"] / r["offline"]["images_per_second"] for r in rounds]
    cpu_ratios = [
        r["offline"]["cpu_ms_per_image"] / r["served"]["cpu_ms_per_image"] for r in rounds
    ]
    # The round of the median ratio stands for the highest concurrency in the table.
    middle = rounds[sorted(range(len(rounds)), key=ratios.__getitem__)[len(rounds) // 2]]
    served["levels"].append(middle["served"])
    result = {
        "command": command_line(),
        "checkpoint": args.checkpoint,
        "device": args.device,
        "engine": args.engine,
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "cpus": os.cpu_count(),
        "load_average_before": load,
        "rounds": rounds,
        "round_ratios": ratios,
        **served,
        "offline_batch32_images_per_second": middle["offline"]["images_per_second"],
        "ratio_at_most_clients": statistics.median(ratios),
        "cpu_ratio_at_most_clients": statistics.median(cpu_ratios),
        "goal_ratio": GOAL_RATIO,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"command: {result['command']}")
    top = served["levels"][-1]["clients"]
    print(f"served at {top} clients / offline Predictor at batch 32, round by round:")
    for k, (round_, ratio) in enumerate(zip(rounds, ratios, strict=True), 1):
        print(
            f"  round {k}: offline {round_['offline']['images_per_second']:6.1f} images/s, "
            f"served {round_['served']['images_per_second']:6.1f} images/s: {ratio:.2f}x"
        )
    print(
        f"{'clients':>7}  {'images/s':>9}  {'p50 ms':>8}  {'p99 ms':>8}  {'failed':>6}  "
        "CPU ms/image"
    )
    for level in served["levels"]:
        print(
            f"{level['clients']:>7}  {level['images_per_second']:>9.1f}  {level['p50_ms']:>8.1f}"
            f"  {level['p99_ms']:>8.1f}  {level['failed']:>6}  {level['cpu_ms_per_image']:>12.1f}"
        )
    ratio = result["ratio_at_most_clients"]
    print(
        f"served / offline at {top} clients, median of {len(rounds)} rounds: {ratio:.2f}x "
        f"(goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}); "
        f"by CPU time per image: {result['cpu_ratio_at_most_clients']:.2f}x "
        f"(offline {middle['offline']['cpu_ms_per_image']:.1f} CPU ms per image)"
    )
    bad = served["bad"]
    growth = bad["rss_growth"]
    print(
        f"{bad['bad_requests']} bad requests mixed with {bad['good_requests']} good: "
        f"{bad['good_failed']} good failed, {bad['bad_not_4xx']} bad not answered 4xx "
        f"({bad['bad_connection_closed']} closed while sending), alive: {bad['alive']}, "
        f"memory {bad['rss_before_mb']:.0f} -> {bad['rss_after_mb']:.0f} MB "
        f"({100 * growth:+.1f} %, goal < {100 * GOAL_MEMORY_GROWTH:.0f} %)"
    )


if __name__ == "__main__":
    main()
