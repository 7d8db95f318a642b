"""The embedded broker under a consumer that polls while producers write: every message arrives
whole, once (kombu's own filesystem transport hands out files still being written)."""

from __future__ import annotations

import threading
from queue import Empty

from kombu import Connection

from controlplane.broker import Transport

MESSAGES = 20
BODY = "x" * 1_000_000  # big enough that writing one takes longer than a consumer's poll


def test_a_consumer_polling_during_writes_gets_every_message_whole(tmp_path):
    folder = str(tmp_path)
    options = {"data_folder_in": folder, "data_folder_out": folder, "polling_interval": 0}
    received: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def consume() -> None:
        with Connection(transport=Transport, transport_options=options) as conn:
            queue = conn.SimpleQueue("q")
            try:
                while len(received) < MESSAGES and not done.is_set():
                    try:
                        message = queue.get(timeout=0.01)
                    except Empty:
                        continue
                    assert message.payload["body"] == BODY
                    received.append(message.payload["n"])
                    message.ack()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)
            finally:
                queue.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection(transport=Transport, transport_options=options) as conn:
        queue = conn.SimpleQueue("q")
        for n in range(MESSAGES):
            queue.put({"n": n, "body": BODY})
        queue.close()
    consumer.join(timeout=60)
    done.set()
    assert not errors, errors
    assert sorted(received) == list(range(MESSAGES))


def test_filesystem_urls_use_the_atomic_transport_in_every_process_of_the_app():
    import controlplane.celery  # noqa: F401 - what every web, worker and beat process loads

    with Connection("filesystem://localhost/") as conn:
        assert isinstance(conn.transport, Transport)
