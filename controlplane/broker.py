"""The brokers' transports: kombu's filesystem transport with messages written atomically (the
embedded default), and kombu's Redis transport that lives through Redis going away.

kombu's own ``_put`` creates the message file in the queue folder and then writes it, and its
``_get`` takes any file it finds there without a lock: under load a consumer can take a file that
is still empty and die on it (``JSONDecodeError``, an unrecoverable worker error). Here a message
is written under a name no consumer looks at and renamed into place once complete, so a consumer
only ever sees whole messages. ``controlplane/celery.py`` makes it the transport of ``filesystem://`` URLs.

A queue folder that is missing or unreadable (an unmounted volume, a folder being restored)
is an outage, not a crash: a consumer logs it once and finds no message until the folder is back,
then goes on at once; a producer's message fails to send (``controlplane.queue`` logs it and the
reaper sends the work again).

When Redis goes away, Celery collects the lost connection and then closes it; every task here
acks late, so closing its channel tries to give the running tasks' messages back, and later
acknowledging a finished task's message tries again, both through the collected transport: an
AttributeError that Celery takes for an unrecoverable error, and the worker exits the moment
Redis goes away (or as soon as a task ends after it came back). Those messages were on the
connection that was lost (with a Redis restarted empty, on a server that no longer has them), and
the database already records what the tasks did, so here both are best effort: logged, not raised.
"""

from __future__ import annotations

import logging
import os
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger("controlplane.broker")


class Channel(filesystem.Channel):
    _unavailable = False

    def _get(self, queue):
        try:
            message = super()._get(queue)  # (Empty when there is none)
        except OSError as exc:  # the folder's listing failed (a missing file is skipped)
            if not self._unavailable:
                log.warning("broker folder %s unavailable (%s); waiting for it", self.data_folder_in, exc)
            self._unavailable = True
            raise Empty() from exc
        self._back()
        return message

    def _back(self) -> None:
        if self._unavailable:
            log.warning("broker folder %s is back", self.data_folder_in)
            self._unavailable = False

    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` on ``queue``: written to a hidden file, then renamed into the folder
        (atomic on one filesystem). The name keeps kombu's ``<ms>_<uuid>.<queue>.msg`` order."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A consumer takes only names whose text after the first dot is "<queue>.msg".
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        try:
            with open(partial, "wb", buffering=0) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


class RedisQoS(kombu_redis.QoS):
    def ack(self, delivery_tag):
        try:
            super().ack(delivery_tag)
        except AttributeError:  # the connection it came on was lost and collected
            log.info("message %s not acknowledged: its broker connection was lost", delivery_tag)
            self._delivered.pop(delivery_tag, None)

    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except AttributeError:  # (as above) nothing can be given back through it
            log.info("unacknowledged messages not given back: their broker connection was lost")
            return None


class RedisChannel(kombu_redis.Channel):
    QoS = RedisQoS


class RedisTransport(kombu_redis.Transport):
    Channel = RedisChannel
