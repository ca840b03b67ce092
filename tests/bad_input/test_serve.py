"""Bad requests to ``pedattr serve``: each is answered with a 4xx and ``{"error": one line}``
naming the problem, and the service goes on serving good requests; its memory does not grow.

A real server (tests/conftest.py ``served``) started with small limits: 1 MiB bodies, 8 images
per request, 1,000,000 pixels per image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("litserve")
requests = pytest.importorskip("requests")

from pedattr.cli import main  # noqa: E402
from tests.helpers import save_tiny_checkpoint, tree_rss  # noqa: E402


def png_bytes(width: int = 32, height: int = 64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none: a few bytes that would
    decode to gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = png_bytes()
#: name -> (keyword arguments of requests.post, status, words the reason holds)
BAD_REQUESTS: dict[str, tuple[dict, int, str]] = {
    "not an image": (
        {"files": [("image", ("notes.txt", b"just some text", "text/plain"))]},
        422,
        "notes.txt: cannot read the image: not an image format Pillow reads",
    ),
    "truncated image": (
        {"files": [("image", ("cut.png", GOOD[: len(GOOD) // 2], "image/png"))]},
        422,
        "cut.png: cannot read the image: image file is truncated",
    ),
    "Pillow's decompression bomb": (
        {"files": [("image", ("bomb.png", png_header(30_000, 10_000), "image/png"))]},
        413,
        "bomb.png: Image size (300000000 pixels) exceeds limit",
    ),
    "over the pixel limit": (
        {"files": [("image", ("big.png", png_header(2_000, 1_000), "image/png"))]},
        413,
        "big.png: 2000x1000 is 2000000 pixels, over the limit of 1000000",
    ),
    "empty body": (
        {"data": b"", "headers": {"Content-Type": "application/json"}},
        400,
        "empty body",
    ),
    "empty file": (
        {"files": [("image", ("none.png", b"", "image/png"))]},
        400,
        "none.png: empty file",
    ),
    "huge body by Content-Length": (
        {"data": b"x" * (2**20 + 1), "headers": {"Content-Type": "application/json"}},
        413,
        "body of 1048577 bytes is over the limit of 1048576",
    ),
    "wrong content type": (
        {"data": GOOD, "headers": {"Content-Type": "image/png"}},
        415,
        "Content-Type must be multipart/form-data or application/json, got image/png",
    ),
    "no content type": ({"data": GOOD}, 415, "got none"),
    "unknown JSON field": (
        {"json": {"images": [b64(GOOD)], "threshold": 0.3}},
        400,
        "unknown field 'threshold'",
    ),
    "unknown multipart field": (
        {"files": [("image", ("a.png", GOOD, "image/png")), ("photo", ("b.png", GOOD))]},
        400,
        "unknown field 'photo'",
    ),
    "a text field named image": (
        {"files": [("image", (None, "not a file"))]},
        400,
        "field 'image' is not a file",
    ),
    "bad base64": (
        {"json": {"images": [b64(GOOD), "not*base64!"]}},
        400,
        "images[1]: not valid base64",
    ),
    "base64 of a non-image": (
        {"json": {"images": [b64(b"hello world")], "names": ["hello.txt"]}},
        422,
        "hello.txt: cannot read the image",
    ),
    "not JSON": (
        {"data": b"{images: nope", "headers": {"Content-Type": "application/json"}},
        400,
        "body is not valid JSON",
    ),
    "JSON not an object": ({"json": [b64(GOOD)]}, 400, "expected a JSON object"),
    "images not a list": ({"json": {"images": b64(GOOD)}}, 400, "'images' must be a list"),
    "names that do not match": (
        {"json": {"images": [b64(GOOD)], "names": ["a", "b"]}},
        400,
        "'names' must be a list of strings, one per image",
    ),
    "no image": ({"json": {"images": []}}, 400, "no image in the request"),
    "too many images": (
        {"json": {"images": [b64(GOOD)] * 9}},
        413,
        "9 images in one request; the limit is 8",
    ),
    "too many files": (
        {"files": [("image", (f"{k}.png", GOOD, "image/png")) for k in range(9)]},
        413,
        "more than 8 images in one request",
    ),
    "malformed multipart": (
        {
            "data": b"--nope\r\nnot a part",
            "headers": {"Content-Type": "multipart/form-data; boundary=other"},
        },
        400,
        "malformed multipart body",
    ),
}


def assert_refused(answer: requests.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.text.count("\n") == 0
    reason = answer.json()["error"]
    assert words in reason
    assert "\n" not in reason


def assert_still_serving(url: str) -> None:
    answer = requests.post(f"{url}/predict", files=[("image", ("ok.png", GOOD))], timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["source"] == "ok.png"


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_a_4xx_with_one_line_and_the_service_goes_on(served, case):
    options, status, words = BAD_REQUESTS[case]
    answer = requests.post(f"{served.url}/predict", timeout=60, **options)
    assert_refused(answer, status, words)
    assert_still_serving(served.url)


def raw_exchange(url: str, head: str, send: Callable[[socket.socket], None]) -> tuple[int, dict]:
    """Send ``head`` and whatever ``send`` writes on a bare connection; the status and JSON
    body of the answer (the server may answer before the body is complete)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head.encode())
        with contextlib.suppress(OSError):  # the server may answer and close while we send
            send(connection)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = connection.recv(65536)
            if not piece:
                break
            answer += piece
    status = int(answer.split(b" ", 2)[1])
    body = answer.split(b"\r\n\r\n", 1)[1]
    if b"transfer-encoding: chunked" in answer.lower().split(b"\r\n\r\n")[0]:
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0].rstrip(b"\r\n")
    return status, json.loads(body)


@pytest.mark.slow
def test_a_declared_huge_body_is_refused_before_it_is_sent(served):
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * 2**30}\r\n\r\n"
    )
    status, answer = raw_exchange(served.url, head, lambda connection: None)
    assert status == 413
    assert answer["error"] == f"body of {10 * 2**30} bytes is over the limit of 1048576"
    assert_still_serving(served.url)


@pytest.mark.slow
def test_a_huge_streamed_body_is_cut_off_at_the_limit(served):
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536

    def stream(connection: socket.socket) -> None:
        for _ in range(64):  # 4 MiB, four times the limit, with no length said beforehand
            connection.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        connection.sendall(b"0\r\n\r\n")

    status, answer = raw_exchange(served.url, head, stream)
    assert status == 413
    assert answer["error"] == "body is over the limit of 1048576 bytes"
    assert_still_serving(served.url)


@pytest.mark.slow
def test_memory_does_not_grow_under_bad_requests(served):
    def barrage(rounds: int) -> None:
        for _ in range(rounds):
            for options, status, _ in BAD_REQUESTS.values():
                answer = requests.post(f"{served.url}/predict", timeout=60, **options)
                assert answer.status_code == status

    barrage(2)  # warm up: allocators and caches settle
    before = tree_rss(served.process.pid)
    barrage(6)
    after = tree_rss(served.process.pid)
    assert after < 1.1 * before, (before, after)
    assert_still_serving(served.url)


# --- bad settings: one line, exit status 2, before any process starts -------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--checkpoint", "missing.safetensors"], "missing.safetensors"),
        (["--engine", "onnxruntime"], "--engine onnxruntime runs an exported .onnx model"),
        (["--thresholds", "calibrated"], "the checkpoint stores no calibrated thresholds"),
        (["--port", "80"], "argument --port: must be from 1024 to 65535, got 80"),
        (["--max-request-size", "0MB"], "argument --max-request-size: must be at least 1 byte"),
        (["--max-request-size", "lots"], "argument --max-request-size: expected a whole number"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(capsys, checkpoint, arguments, message):
    if "--checkpoint" not in arguments:
        arguments = ["--checkpoint", checkpoint, *arguments]
    assert main(["serve", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.slow
def test_a_truncated_image_fails_its_own_request_not_its_batch(served):
    """Truncation shows only when pixels are decoded, in the worker, where the image shares a
    batch with others: its request alone is answered 422."""
    from concurrent.futures import ThreadPoolExecutor

    truncated = GOOD[: len(GOOD) // 2]

    def post(k: int) -> tuple[int, int]:
        data, name = (truncated, f"cut{k}.png") if k % 2 else (GOOD, f"ok{k}.png")
        answer = requests.post(f"{served.url}/predict", files=[("image", (name, data))], timeout=60)
        return k, answer.status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = dict(pool.map(post, range(12)))
    assert statuses == {k: 422 if k % 2 else 200 for k in range(12)}
