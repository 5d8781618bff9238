"""
The event stream over a real loopback connection to a client that never reads: the
transport pauses the subscriber, its queue fills, it is dropped, and what is buffered
for it stays bounded however many events follow.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from orchestrator.config.model import AdminConfig
from tests.admin.builders import TOKEN, make_admin
from tests.helpers import inline

BIG = "x" * 10_000


class NeverReadingClientTests(TestCase):
    timeout = 60

    @inline
    async def test_a_client_that_never_reads_is_dropped_and_memory_stays_bounded(self):
        world = make_admin(("alpha", {}), token=TOKEN,
                           admin=AdminConfig(token=TOKEN, subscriber_queue=16))
        site = Site(world.app.resource(), reactor=reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(world.stream.close)

        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        client.sendall(b"GET /api/events HTTP/1.1\r\nHost: admin\r\nAccept: text/event-stream\r\n"
                       b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        for _ in range(100):
            if world.stream.subscriber_count:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(world.stream.subscriber_count, 1)
        [subscriber] = list(world.stream._subscribers)
        transport = subscriber._request.channel.transport

        # 2000 events of 10 KB: 20 MB, which the client never reads.
        for _ in range(40):
            for _ in range(50):
                world.world.bus.emit("swarm.reconnected", None, padding=BIG)
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((world.stream.subscriber_count, world.stream.dropped), (0, 1))
        self.assertEqual(subscriber.dropped,
                         "the client read too slowly: 16 events were waiting")
        buffered = transport._tempDataLen + len(transport.dataBuffer)
        self.assertLess(buffered, 2_000_000)
        # And the orchestrator cuts it after a few seconds (on the stream's clock), as it
        # still does not read.
        world.clock.advance(5)
        for _ in range(80):
            if not transport.connected:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(transport.connected)
