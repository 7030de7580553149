"""The waitress server of the web app, answering over-limit uploads of any size with a 413.

Waitress reads a whole request body before the app runs. Left to itself it refuses a body
over its ``max_request_body_size`` by answering and closing the connection while the client is
still sending; the client's operating system then sees a reset connection instead of the
answer (a browser shows a network error). Here the server reads such a body to its end and
throws it away as it arrives (nothing is kept in memory or written to disk), then lets the app
answer: Flask sees the declared size over ``MAX_CONTENT_LENGTH`` and returns the app's 413
page or JSON. A connection that goes quiet is still closed after waitress's
``channel_timeout``.
"""

from __future__ import annotations

import io
import sys

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.receiver import ChunkedReceiver, FixedStreamReceiver
from waitress.server import BaseWSGIServer, create_server

from .app import DEFAULT_MAX_UPLOAD_BYTES


class DiscardingBuffer:
    """A waitress body buffer that counts the bytes it is given and keeps none."""

    def __init__(self, length: int = 0):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def append(self, data: bytes) -> None:
        self.length += len(data)

    def getfile(self) -> io.BytesIO:
        return io.BytesIO(b"")

    def close(self) -> None:
        pass


def parser_with_limit(max_upload_bytes: int) -> type[HTTPRequestParser]:
    """Return a waitress request parser that discards bodies over ``max_upload_bytes``.

    A body announced by ``Content-Length`` is discarded from its first byte; a chunked body
    from the moment it passes the limit, after which its length is reported as the number of
    bytes received, so the app sees it as over the limit.
    """

    class LimitedRequestParser(HTTPRequestParser):
        discarded = False

        def parse_header(self, header_plus):
            super().parse_header(header_plus)
            if isinstance(self.body_rcv, FixedStreamReceiver) and (
                    self.content_length > max_upload_bytes):
                self.body_rcv.buf.close()
                self.body_rcv = FixedStreamReceiver(self.content_length, DiscardingBuffer())
                self.discarded = True

        def received(self, data):
            consumed = super().received(data)
            receiver = self.body_rcv
            if (isinstance(receiver, ChunkedReceiver) and not self.discarded
                    and len(receiver) > max_upload_bytes):
                kept = receiver.buf
                receiver.buf = DiscardingBuffer(len(kept))
                kept.close()
                self.discarded = True
            return consumed

    return LimitedRequestParser


# glibc's mallopt parameters.
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8


def return_freed_memory(mmap_threshold: int = 8 * 2**20, arenas: int = 2) -> bool:
    """Make glibc's malloc give large freed blocks back to the system; return whether it could.

    By default glibc keeps what a thread freed in that thread's own arena, and after freeing a
    large block it raises the size from which blocks are mapped (up to 32 MB): a decoded
    picture (Pillow allocates it in 16 MB blocks) stays resident after each request, once per
    worker thread that ever decoded one. A fixed threshold maps and unmaps blocks of at least
    ``mmap_threshold`` bytes (pictures, full-size masks), and at most ``arenas`` arenas are
    shared by the threads. Linux with glibc only; elsewhere nothing changes.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                    and libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def make_server(app, host: str = "127.0.0.1", port: int = 5000, threads: int = 4,
                **options):
    """Return a waitress server (not yet running: call ``run()``) for the web app.

    Bodies up to the app's ``MAX_CONTENT_LENGTH`` stay in memory; larger ones, however large,
    are read and discarded and get the app's 413 answer. ``options`` are more waitress
    settings. ``port=0`` picks a free port (``server.effective_port``).
    """
    limit = app.config.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_UPLOAD_BYTES
    buffer = limit + 2**20

    class Channel(HTTPChannel):
        parser_class = parser_with_limit(limit)

    settings = {
        # The discarding parser bounds memory, so waitress's own refusal (which resets the
        # client's connection) is never needed.
        "max_request_body_size": sys.maxsize,
        "inbuf_overflow": buffer,
        "outbuf_overflow": max(buffer, 64 * 2**20),
        **options,
    }
    server = create_server(app, host=host, port=port, threads=threads, _start=False, **settings)
    # One listener, or several when the host name resolves to more than one address.
    listeners = ([server] if isinstance(server, BaseWSGIServer)
                 else [s for s in server.map.values() if isinstance(s, BaseWSGIServer)])
    for listener in listeners:
        listener.channel_class = Channel
        listener.accept_connections()
    return server
