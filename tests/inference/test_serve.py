"""``pedattr serve``: the endpoints, equality with ``pedattr predict --json``, several images
per request, concurrent requests batched together, and clients that go away mid-request.

Oracle: the records ``pedattr predict --json`` writes for the same files. The tests marked slow
run a real server (tests/conftest.py ``served``: a subprocess on a free port).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import queue
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

pytest.importorskip("litserve")
requests = pytest.importorskip("requests")

from starlette.middleware.gzip import GZipMiddleware  # noqa: E402

from pedattr.checkpoint.format import load_model  # noqa: E402
from pedattr.cli import main  # noqa: E402
from pedattr.data.dataset import build_transform  # noqa: E402
from pedattr.inference import serve  # noqa: E402
from pedattr.inference.predictor import Prediction  # noqa: E402
from tests.helpers import (  # noqa: E402
    LEARNABLE_ATTRIBUTES,
    assert_json_close,
    learnable_image,
    save_tiny_checkpoint,
    start_server,
    stop_server,
)

#: Probabilities of an image batched with other images than in `pedattr predict` may differ
#: in the last bits (another batch size can take other kernels).
RTOL, ATOL = 1e-5, 1e-6


def write_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` PNG files of different sizes in ``folder``; their names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        labels = rng.integers(0, 2, len(LEARNABLE_ATTRIBUTES))
        size = (64 + 16 * k, 32 + 8 * k)
        learnable_image(labels, rng, size=size).save(folder / f"person{k}.png")
        names.append(f"person{k}.png")
    return names


def predict_json(checkpoint: Path, folder: Path, names: list[str], monkeypatch, capsys) -> list:
    """What ``pedattr predict --json`` writes for ``names``, run in ``folder`` so that its
    sources are the bare names, as uploaded files are named."""
    monkeypatch.chdir(folder)
    code = main(["predict", "--checkpoint", str(checkpoint), *names, "--json", "out.jsonl"])
    capsys.readouterr()
    assert code == 0
    return [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]


def multipart(folder: Path, names: list[str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (name, (folder / name).read_bytes(), "image/png")) for name in names]


# --- without a server -------------------------------------------------------------------------


def test_json_images_decode_base64_names_and_data_urls():
    body = json.dumps(
        {
            "images": ["aGVsbG8=", "data:image/png;base64,d29y\nbGQ="],
            "names": ["a.png", "b.png"],
        }
    ).encode()
    assert serve.json_images(body, max_images=4) == [("a.png", b"hello"), ("b.png", b"world")]
    unnamed = json.dumps({"images": ["aGVsbG8="]}).encode()
    assert serve.json_images(unnamed, max_images=4) == [(None, b"hello")]
    assert serve.image_name(None, 3) == "<image 3>"


def test_results_split_back_into_their_requests():
    first = Prediction("a.png", (4, 2), {"x": 0.7}, ["x"], {}, {"x": "global"})
    second = Prediction("b.png", (4, 2), {"x": 0.2}, [], {}, {"x": "global"})
    assert serve.split_results([first, second, first], [1, 2]) == [[first], [second, first]]
    with pytest.raises(ValueError, match="3 results for 2 images"):
        serve.split_results([first] * 3, [1, 1])


def test_images_are_prepared_in_the_http_process_as_predict_prepares_them(tmp_path: Path):
    transform = build_transform((32, 16))
    image = Image.new("RGB", (20, 50), (200, 30, 40))
    image.save(tmp_path / "person.png")
    data = (tmp_path / "person.png").read_bytes()
    prepared = serve.prepare_images([("person.png", data)], transform)
    # The queue carries NumPy pixels (a tensor would go through shared memory).
    [(name, pixels, size)] = serve.queued(prepared)
    assert (name, pixels.dtype, pixels.shape) == ("person.png", np.uint8, (3, 32, 16))
    assert size == (50, 20)
    assert np.array_equal(pixels, transform(image).numpy())
    # Every image that fails to decode is named in the one 422 reason.
    cut = data[: len(data) // 2]
    with pytest.raises(serve.BadRequest) as refused:
        serve.prepare_images([("a.png", data), ("b.png", cut), ("c.png", cut)], transform)
    assert refused.value.status == 422
    assert refused.value.reason.startswith("b.png: cannot read the image")
    assert "; c.png: cannot read the image" in refused.value.reason


def test_the_engine_must_suit_the_model_file():
    assert serve.ServeSettings("model.safetensors").engine == "torch"
    assert serve.ServeSettings("model.onnx").engine == "onnxruntime"
    serve.check_engine(serve.ServeSettings("model.safetensors"))
    serve.check_engine(serve.ServeSettings("model.onnx"))
    serve.check_engine(serve.ServeSettings("model.onnx", engine="onnxruntime"))
    with pytest.raises(ValueError, match="model.onnx: an exported ONNX model runs on --engine"):
        serve.check_engine(serve.ServeSettings("model.onnx", engine="torch"))
    with pytest.raises(ValueError, match="runs an exported .onnx model; export one with"):
        serve.check_engine(serve.ServeSettings("model.safetensors", engine="onnxruntime"))


@pytest.mark.parametrize("gzip", [False, True])
def test_answers_are_compressed_only_with_gzip(tmp_path, gzip):
    checkpoint = save_tiny_checkpoint(tmp_path / "model.safetensors")
    server = serve.build_server(serve.ServeSettings(str(checkpoint), device="cpu", gzip=gzip))
    kinds = [middleware.cls for middleware in server.app.user_middleware]
    assert (GZipMiddleware in kinds) is gzip


def test_workers_get_the_spec_without_the_http_side_model(tmp_path):
    """LitServe pickles the API and its spec into each spawned worker, which loads its own
    model; the spec's predictor (for preparing and records) stays in the HTTP process."""
    checkpoint = save_tiny_checkpoint(tmp_path / "model.safetensors")
    server = serve.build_server(serve.ServeSettings(str(checkpoint), device="cpu"))
    [api] = server.litapi_connector
    spec = api.spec
    assert spec.predictor is not None
    sent = pickle.loads(pickle.dumps(spec))
    assert sent.predictor is None
    assert sent.description == spec.description
    assert spec.predictor is not None  # the original keeps it


def _record(message: str, error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "litserve.server", logging.ERROR, "", 0, message, (), (type(error), error, None)
    )


def test_only_the_monitor_losing_the_stopped_manager_is_dropped():
    keep = serve.ManagerGoneFilter().filter
    assert not keep(_record("Monitoring worker crashed", BrokenPipeError(32, "Broken pipe")))
    assert not keep(_record("Monitoring worker crashed", EOFError()))
    assert keep(_record("Monitoring worker crashed", ValueError("a real failure")))
    assert keep(_record("Worker died", BrokenPipeError(32, "Broken pipe")))


def test_workers_leave_a_core_to_the_http_process(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    settings = serve.ServeSettings("model.safetensors")
    assert serve.worker_threads(settings, cpus=2) == 1
    assert serve.worker_threads(settings, cpus=8) == 7
    assert serve.worker_threads(serve.ServeSettings("m", workers=3), cpus=8) == 2
    assert serve.worker_threads(serve.ServeSettings("m", workers=4), cpus=2) == 1
    assert serve.worker_threads(serve.ServeSettings("m", threads=3), cpus=2) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert serve.worker_threads(settings, cpus=8) is None  # the environment's setting stays


class _Api:
    """What GatheringLoop reads of a LitAPI."""

    def __init__(self, batch_timeout: float, max_batch_size: int = 4) -> None:
        self.batch_timeout = batch_timeout
        self.max_batch_size = max_batch_size
        self.request_timeout = 30.0


def _request(uid: str, queued_at: float | None = None) -> tuple:
    return (0, uid, time.monotonic() if queued_at is None else queued_at, [(uid, b"")])


class _Transport:
    """What GatheringLoop's answers go to: LitServe's transport, recording what it is sent."""

    def __init__(self) -> None:
        self.sent: queue.Queue = queue.Queue()

    def send(self, item: tuple, consumer_id: int) -> None:
        self.sent.put((consumer_id, item))


def _gather(
    loop: serve.GatheringLoop, api: _Api, requests_: queue.Queue
) -> tuple[list[str], list[str], float]:
    start = time.monotonic()
    batch, timed_out = loop.get_batch_requests(api, requests_, _Transport())
    return [uid for _, uid, _ in batch], [uid for _, uid in timed_out], time.monotonic() - start


# One worker (prefetching requests into the worker) and several (reading LitServe's queue).
GATHERING = pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])


@GATHERING
def test_a_busy_worker_runs_what_queued_up_without_waiting(prefetch):
    loop = serve.GatheringLoop(prefetch=prefetch)
    waiting = queue.Queue()
    for uid in "abcdef":
        waiting.put(_request(uid))
    time.sleep(0.01)  # queued before the worker asks: it was busy
    taken, _, seconds = _gather(loop, _Api(batch_timeout=5.0), waiting)
    assert taken == ["a", "b", "c", "d"]  # max_batch_size, at once
    assert seconds < 1.0
    taken, _, seconds = _gather(loop, _Api(batch_timeout=5.0), waiting)
    assert taken == ["e", "f"]  # what is left, without waiting for more
    assert seconds < 1.0


@GATHERING
def test_an_idle_worker_waits_the_batch_timeout_for_others_to_join(prefetch):
    def arrive(requests_: queue.Queue) -> None:
        for uid in "xy":
            time.sleep(0.05)
            requests_.put(_request(uid))

    for timeout, expected in ((0.3, ["x", "y"]), (0.0, ["x"])):
        requests_: queue.Queue = queue.Queue()
        sender = threading.Thread(target=arrive, args=(requests_,))
        sender.start()
        taken, _, _ = _gather(serve.GatheringLoop(prefetch), _Api(timeout), requests_)
        sender.join()
        assert taken == expected


@GATHERING
def test_gathering_answers_timed_out_requests_and_stops_at_the_sentinel(prefetch):
    from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError

    loop = serve.GatheringLoop(prefetch=prefetch)
    requests_: queue.Queue = queue.Queue()
    requests_.put(_request("old", queued_at=time.monotonic() - 60))
    requests_.put(_request("new"))
    taken, timed_out, _ = _gather(loop, _Api(batch_timeout=0.0), requests_)
    assert (taken, timed_out) == (["new"], ["old"])
    requests_.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        _gather(loop, _Api(batch_timeout=0.0), requests_)


def test_prefetching_moves_requests_into_the_worker_while_it_is_busy():
    loop = serve.GatheringLoop(prefetch=True)
    requests_: queue.Queue = queue.Queue()
    requests_.put(_request("first"))
    assert _gather(loop, _Api(batch_timeout=0.0), requests_)[0] == ["first"]
    for uid in "ab":  # arrive while the first batch runs
        requests_.put(_request(uid))
    deadline = time.monotonic() + 5
    while not requests_.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert requests_.empty()  # taken from LitServe's queue before the worker asked
    assert _gather(loop, _Api(batch_timeout=0.0), requests_)[0] == ["a", "b"]


def _gathering(
    transport: _Transport, prefetch: bool = True
) -> tuple[serve.GatheringLoop, queue.Queue]:
    """A loop that has gathered one batch, so that its threads run, and the queue it reads."""
    loop = serve.GatheringLoop(prefetch=prefetch)
    requests_: queue.Queue = queue.Queue()
    requests_.put(_request("first"))
    loop.get_batch_requests(_Api(batch_timeout=0.0), requests_, transport)
    return loop, requests_


class _SlowTransport(_Transport):
    """Sends only once ``go`` is set, as a manager process busy elsewhere would."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def send(self, item: tuple, consumer_id: int) -> None:
        self.go.wait(timeout=10)
        super().send(item, consumer_id)


def test_answers_leave_in_order_without_holding_up_the_worker():
    from litserve.utils import LitAPIStatus, LoopResponseType

    transport = _SlowTransport()
    loop, _ = _gathering(transport)
    start = time.monotonic()
    for uid in ("a", "b", "c"):
        loop.put_response(transport, 3, uid, [uid], LitAPIStatus.OK, LoopResponseType.REGULAR)
    assert time.monotonic() - start < 1.0  # the worker goes on while the transport is busy
    assert transport.sent.empty()
    transport.go.set()
    sent = [transport.sent.get(timeout=5) for _ in range(3)]
    assert [(consumer, item[0], item[1][0]) for consumer, item in sent] == [
        (3, "a", ["a"]),
        (3, "b", ["b"]),
        (3, "c", ["c"]),
    ]


@GATHERING
def test_answers_left_before_the_sentinel_leave_before_the_loop_stops(prefetch):
    from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
    from litserve.utils import LitAPIStatus, LoopResponseType

    transport = _SlowTransport()
    loop, requests_ = _gathering(transport, prefetch)
    for uid in ("a", "b"):
        loop.put_response(transport, 0, uid, [], LitAPIStatus.OK, LoopResponseType.REGULAR)
    threading.Timer(0.2, transport.go.set).start()
    requests_.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        loop.get_batch_requests(_Api(batch_timeout=0.0), requests_, transport)
    assert [transport.sent.get_nowait()[1][0] for _ in range(2)] == ["a", "b"]


def test_an_error_reading_the_queue_fails_the_worker_loop_as_without_prefetching():
    class Broken(queue.Queue):
        def get(self, block: bool = True, timeout: float | None = None) -> tuple:
            raise RuntimeError("the manager answered nonsense")

    loop = serve.GatheringLoop(prefetch=True)
    with pytest.raises(RuntimeError, match="nonsense"):
        loop.get_batch_requests(_Api(batch_timeout=0.0), Broken(), _Transport())


def test_one_worker_prefetches_and_several_do_not():
    def loop_of(workers: int) -> serve.GatheringLoop:
        api = serve.AttributeAPI(serve.ServeSettings("m", workers=workers), spec=None)
        return api.loop

    assert loop_of(1).prefetch
    assert not loop_of(2).prefetch


# --- a running server -------------------------------------------------------------------------


@pytest.mark.slow
def test_health_and_model(served):
    health = requests.get(f"{served.url}/health", timeout=10)
    assert (health.status_code, health.text) == (200, "ok")
    described = requests.get(f"{served.url}/model", timeout=10).json()
    config = load_model(served.checkpoint).config
    assert described["attributes"] == list(LEARNABLE_ATTRIBUTES)
    assert described["thresholds"] == dict.fromkeys(LEARNABLE_ATTRIBUTES, 0.5)
    assert described["threshold_mode"] == "default"
    assert described["input_size"] == {"height": 64, "width": 32}
    assert described["levels"] == ["level1", "level2", "level3"]
    assert described["model"] == json.loads(json.dumps(config.to_dict()))
    assert described["engine"] == "torch"
    assert described["serving"]["max_images"] == served.max_images


@pytest.mark.slow
def test_predict_equals_pedattr_predict_json(served, tmp_path, monkeypatch, capsys):
    names = write_images(tmp_path, 5)
    expected = predict_json(served.checkpoint, tmp_path, names, monkeypatch, capsys)
    # All five in one request: one forward of the same five images. The same records, and the
    # same numbers up to rounding: the server's worker may run torch with another number of
    # threads than this process, which changes the order of float sums.
    answer = requests.post(f"{served.url}/predict", files=multipart(tmp_path, names), timeout=60)
    assert answer.status_code == 200, answer.text
    assert_json_close(answer.json(), expected, rel=RTOL, abs_=ATOL)
    # requests asks for gzip; answers are not compressed unless --gzip.
    assert "gzip" in answer.request.headers["Accept-Encoding"]
    assert "Content-Encoding" not in answer.headers
    # The same as base64 JSON, named.
    encoded = [base64.b64encode((tmp_path / n).read_bytes()).decode() for n in names]
    answer = requests.post(
        f"{served.url}/predict", json={"images": encoded, "names": names}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert_json_close(answer.json(), expected, rel=RTOL, abs_=ATOL)
    # Unnamed images are named by their place in the request, as the Predictor names them.
    answer = requests.post(f"{served.url}/predict", json={"images": encoded[:2]}, timeout=60)
    assert [r["source"] for r in answer.json()] == ["<image 0>", "<image 1>"]
    for found, wanted in zip(answer.json(), expected[:2], strict=True):
        assert_json_close(found, {**wanted, "source": found["source"]}, rel=RTOL, abs_=ATOL)


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_records(served, tmp_path, monkeypatch, capsys):
    names = write_images(tmp_path, 8, seed=1)
    expected = predict_json(served.checkpoint, tmp_path, names, monkeypatch, capsys)
    # Eight clients at once, one or two images each: batched together by the server.
    requests_ = [names[k : k + 1 + k % 2] for k in range(8)]

    def post(chosen: list[str]) -> list:
        answer = requests.post(
            f"{served.url}/predict", files=multipart(tmp_path, chosen), timeout=60
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, requests_))
    by_name = {record["source"]: record for record in expected}
    for chosen, records in zip(requests_, answers, strict=True):
        assert [r["source"] for r in records] == chosen
        for record in records:
            assert_json_close(record, by_name[record["source"]], rel=RTOL, abs_=ATOL)


def _send_and_hang_up(url: str, head: bytes, body: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + body)
        time.sleep(0.05)


@pytest.mark.slow
def test_clients_that_hang_up_do_not_break_a_batch(served, tmp_path, monkeypatch, capsys):
    names = write_images(tmp_path, 4, seed=2)
    expected = predict_json(served.checkpoint, tmp_path, names, monkeypatch, capsys)
    image = (tmp_path / names[0]).read_bytes()
    full = json.dumps({"images": [base64.b64encode(image).decode()]}).encode()
    head = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(full)}\r\n\r\n"
    ).encode()

    def good(name: str) -> dict:
        answer = requests.post(
            f"{served.url}/predict", files=multipart(tmp_path, [name]), timeout=60
        )
        assert answer.status_code == 200, answer.text
        return answer.json()[0]

    def rude(k: int) -> None:
        # Half of them hang up halfway through the body, half right after sending all of it
        # (their request is queued, maybe batched with the good ones, and nobody reads it).
        _send_and_hang_up(served.url, head, full[: len(full) // 2] if k % 2 else full)

    with ThreadPoolExecutor(12) as pool:
        rude_calls = [pool.submit(rude, k) for k in range(8)]
        answers = list(pool.map(good, names))
        for call in rude_calls:
            call.result()
    for found, wanted in zip(answers, expected, strict=True):
        assert_json_close(found, wanted, rel=RTOL, abs_=ATOL)
    assert served.process.poll() is None
    assert requests.get(f"{served.url}/health", timeout=10).status_code == 200


@pytest.mark.slow
def test_ctrl_c_stops_every_process_without_a_traceback(served):
    """Ctrl-C in a terminal sends SIGINT to every process of the group (as do `pkill -f` and
    systemd's control-group stop), not only to the main one."""
    process, url = start_server(served.checkpoint, own_group=True)
    port = url.rsplit(":", 1)[1]
    members = psutil.Process(process.pid).children(recursive=True)
    assert members, "the service runs its HTTP process and worker as children"
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(members, timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    log = served.checkpoint.with_name(f"serve-{port}.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


@pytest.mark.slow
def test_onnxruntime_engine_serves_an_exported_model(served, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from pedattr.inference.export import export_onnx

    model = export_onnx(served.checkpoint, tmp_path / "model.onnx")
    names = write_images(tmp_path / "images", 3, seed=3)
    expected = predict_json(model, tmp_path / "images", names, monkeypatch, capsys)
    process, url = start_server(model)  # a .onnx file: onnxruntime without --engine
    try:
        described = requests.get(f"{url}/model", timeout=10).json()
        answer = requests.post(
            f"{url}/predict", files=multipart(tmp_path / "images", names), timeout=60
        )
    finally:
        assert stop_server(process) == 0
    assert described["engine"] == "onnxruntime"
    assert described["attributes"] == list(LEARNABLE_ATTRIBUTES)
    assert described["quantization"] is None
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected
    assert all(record["peaks"] == {} for record in expected)  # the graph has no activation maps


class _RecordingPredictor:
    """What the worker's warm-up uses of a Predictor, recording the batch sizes it runs."""

    input_size = (8, 4)

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def forward_prepared(self, images: list) -> list:
        self.sizes.append(len(images))
        return []


@pytest.mark.parametrize("every_size", [True, False])
def test_the_warm_up_runs_the_largest_batch_first_and_on_the_cpu_every_size(every_size):
    api = serve.AttributeAPI(serve.ServeSettings("m", max_batch_size=5), spec=None)
    api.predictor = _RecordingPredictor()
    api._warm_up(compile_every_size=every_size)
    assert api.predictor.sizes == ([5, 4, 3, 2, 1] if every_size else [5])


def test_an_answer_that_cannot_be_sent_is_answered_500_and_the_others_leave(caplog):
    from litserve.utils import LitAPIStatus, LoopResponseType

    class Unsendable(_Transport):
        def send(self, item: tuple, consumer_id: int) -> None:
            uid, (_, status, _, _) = item
            if uid == "bad" and status == LitAPIStatus.OK:
                raise TypeError("cannot pickle this")
            super().send(item, consumer_id)

    transport = Unsendable()
    loop, _ = _gathering(transport)
    for uid in ("bad", "good"):
        loop.put_response(transport, 0, uid, [], LitAPIStatus.OK, LoopResponseType.REGULAR)
    sent = {item[0]: item[1][1] for _, item in (transport.sent.get(timeout=5) for _ in range(2))}
    assert sent == {"bad": LitAPIStatus.ERROR, "good": LitAPIStatus.OK}
    assert "could not send the answer to request bad" in caplog.text


@pytest.mark.parametrize(("device", "every_size"), [("cpu", True), ("cuda", False)])
def test_the_worker_sets_the_kernel_cache_before_it_loads_the_model(
    monkeypatch, device, every_size
):
    from pedattr.utils.kernels import CAPACITY_VARIABLE, OLD_CAPACITY_VARIABLE

    monkeypatch.delenv(CAPACITY_VARIABLE, raising=False)
    monkeypatch.delenv(OLD_CAPACITY_VARIABLE, raising=False)
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # threads left alone
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the worker's SIGINT setting
    seen = {}

    def load(settings: serve.ServeSettings, on: str) -> _RecordingPredictor:
        seen["capacity"] = os.environ.get(CAPACITY_VARIABLE)
        return _RecordingPredictor()

    monkeypatch.setattr(serve, "load_predictor", load)
    api = serve.AttributeAPI(serve.ServeSettings("m", max_batch_size=10), spec=None)
    api.setup(device)
    assert seen["capacity"] == "1280"  # 128 kernels per batch size
    assert api.predictor.sizes == (list(range(10, 0, -1)) if every_size else [10])
