"""The embedded broker: kombu's filesystem transport, with every message written atomically.

kombu writes a message file in place (open, then write). A consumer polling meanwhile can move
the file away while it is still empty, read nothing and stop with "Unrecoverable error:
JSONDecodeError": the worker dies. The more loaded the machine, the wider that window. Here the
message is written under a name no consumer picks up (it does not end in ``.<queue>.msg``) and
renamed into place once complete: a rename within one folder is atomic.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: written aside, then renamed into the queue folder."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
