"""
The backend client (orchestrator.http.client): failures before a response, the retry of
a stale keep-alive connection, cancellation, the pool and its limits, one client per
agent.
"""

from __future__ import annotations

import gc

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface.verify import verifyObject

from orchestrator.http.client import IDLE_REUSE_SECONDS, BackendClients
from orchestrator.http.endpoints import BackendEndpoints
from tests.helpers import make_agent
from tests.http.backend import ClientFixture, Producer


class ClientTests(ClientFixture, SynchronousTestCase):
    # Failures, retries and cancellation.

    def test_refused_connection(self) -> None:
        _, _, failures = self.request(accept=False)
        self.network.refuse(ConnectionRefusedError())
        [failure] = failures
        failure.trap(ConnectionRefusedError)

    def test_closed_before_any_answer_again_on_the_retry_fails(self) -> None:
        _, _, failures = self.request()
        self.connection()[0].connectionLost(Failure(ConnectionDone()))
        self.assertEqual((len(self.connections()), failures), (2, []))
        self.connection()[0].connectionLost(Failure(ConnectionDone()))
        [failure] = failures
        failure.trap(ResponseNeverReceived)
        self.assertEqual(len(self.connections()), 2)

    def test_a_new_connection_lost_before_any_answer_is_retried_once(self) -> None:
        # A task that died with the request: the retry may reach another task.
        _, responses, failures = self.request()
        self.connection()[0].connectionLost(Failure(ConnectionLost()))
        self.assertTrue(self.connection()[1].value().startswith(b"GET /x?y=1 HTTP/1.1\r\n"))
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((len(responses), failures), (1, []))

    def test_a_stale_keepalive_connection_is_retried_once_on_a_new_one(self) -> None:
        self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        _, responses, failures = self.request()
        self.connection()[0].connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.connections()), 2)
        self.assertTrue(self.connection()[1].value().startswith(b"GET /x?y=1 HTTP/1.1\r\n"))
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((len(responses), failures), (1, []))

    def test_requests_with_bodies_or_unsafe_methods_are_not_retried(self) -> None:
        for method, body in ((b"POST", None), (b"GET", Producer(length=0))):
            self.request()
            self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            connections = len(self.connections())
            _, _, failures = self.request(method=method, body=body)
            self.connection()[0].connectionLost(Failure(ConnectionDone()))
            self.assertEqual(len(self.connections()), connections)
            failures[0].trap(ResponseNeverReceived)

    def test_cancel_while_waiting_aborts_the_connection(self) -> None:
        deferred, _, failures = self.request()
        deferred.cancel()
        protocol, transport = self.connection()
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        [failure] = failures
        failure.trap(CancelledError)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_cancel_while_connecting_cancels_the_connect(self) -> None:
        deferred, _, failures = self.request(accept=False)
        (connector,) = self.clock.connectors
        deferred.cancel()
        self.assertTrue(connector.stoppedConnecting)
        failures[0].trap(CancelledError)
        self.assertEqual(self.network.accepted, [])

    # The pool.

    def test_idle_connection_closed_by_the_backend_is_forgotten(self) -> None:
        self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.connection()[0].connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.pool.idle_count(), 0)

    def test_connections_idle_too_long_are_closed_not_reused(self) -> None:
        self.request()
        self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", index=0)
        self.clock.advance(IDLE_REUSE_SECONDS - 1)
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", index=1)
        self.clock.advance(1)
        # The newest is still fresh: reused.
        self.request()
        self.assertEqual(len(self.connections()), 2)
        self.assertEqual(self.pool.idle_count(), 1)
        # The other one is now too old: closed, and a new connection is made.
        self.clock.advance(0.5)
        self.request()
        self.assertEqual(len(self.connections()), 3)
        self.assertTrue(self.connection(0)[1].disconnecting)
        self.assertEqual(self.pool.idle_count(), 0)

    def test_pool_keeps_at_most_max_idle(self) -> None:
        self.pool.max_idle = 1
        self.request()
        self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", index=0)
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", index=1)
        self.assertEqual(self.pool.idle_count(), 1)
        self.assertTrue(self.connection(1)[1].disconnecting)

    def test_close_idle_fires_once_the_connections_are_closed(self) -> None:
        self.request()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        closed = self.pool.close_idle()
        protocol, transport = self.connection()
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(closed)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)
        self.assertEqual(self.pool.idle_count(), 0)
        self.successResultOf(self.pool.close_idle())

    def test_provides_iagent(self) -> None:
        self.assertTrue(verifyObject(IAgent, self.client))




class BackendClientsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clients = BackendClients(self.clock, BackendEndpoints(self.clock, 5))

    def test_one_client_per_agent_made_once(self) -> None:
        alpha, beta = make_agent().agent, make_agent(name="beta").agent
        self.assertIs(self.clients.for_agent(alpha), self.clients.for_agent(alpha))
        self.assertIsNot(self.clients.for_agent(alpha), self.clients.for_agent(beta))

    def test_an_agent_gone_takes_its_client_with_it(self) -> None:
        # A reload that removes an agent must not leave it, its pool and its client.
        agent = make_agent().agent
        self.clients.for_agent(agent)
        del agent
        gc.collect()
        self.assertEqual(len(self.clients._clients), 0)

    def test_the_clients_connect_on_the_shared_endpoints_with_a_new_timeout(self) -> None:
        agent = make_agent().agent
        client = self.clients.for_agent(agent)
        self.clients.reconfigure(connect_timeout=2)
        client.request(b"GET", b"http://127.0.0.1:18081/", Headers())
        self.assertEqual(self.clock.tcpClients[0][3], 2)


class PoolBoundTests(ClientFixture, SynchronousTestCase):
    """
    One agent's pool opens at most max_open connections; more requests wait for room.
    """

    OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def setUp(self) -> None:
        super().setUp()
        self.pool.max_open = 2
        self.pool.wait_timeout = 5

    def test_at_most_max_open_connections(self) -> None:
        for _ in range(3):
            self.request()
        self.assertEqual((len(self.connections()), self.pool.open), (2, 2))

    def test_a_waiting_request_takes_a_connection_that_comes_free(self) -> None:
        self.request()
        self.request()
        _, responses, _ = self.request()
        self.answer(self.OK, index=0)
        self.assertEqual(len(self.connections()), 2)
        self.assertEqual(self.connection(0)[1].value().count(b"GET /x?y=1 HTTP/1.1\r\n"), 2)
        self.answer(self.OK, index=0)
        self.assertEqual(len(responses), 1)

    def test_a_closed_connection_makes_room(self) -> None:
        # POSTs: a lost one is not sent again, which would take the room back.
        self.request(method=b"POST")
        self.request(method=b"POST")
        self.request(method=b"POST")
        self.connection(0)[0].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(self.connections()), 3)
        self.assertEqual(self.pool.open, 2)

    def test_a_failed_connect_makes_room(self) -> None:
        self.request(accept=False)
        self.request(accept=False)
        self.request(accept=False)
        self.network.refuse(ConnectionRefusedError())
        self.assertEqual((len(self.network.pending()), self.pool.open), (2, 2))

    def test_waiting_longer_than_the_wait_timeout_fails_the_request(self) -> None:
        from orchestrator.http.client import BackendBusy

        self.request()
        self.request()
        _, _, failures = self.request()
        self.clock.advance(5)
        [failure] = failures
        failure.trap(BackendBusy)
        self.assertIn("2 connections", str(failure.value))

    def test_a_cancelled_waiting_request_leaves_the_queue(self) -> None:
        self.request()
        self.request()
        waiting, _, failures = self.request()
        waiting.cancel()
        failures[0].trap(CancelledError)
        self.answer(self.OK, index=0)
        self.assertEqual(self.pool.idle_count(), 1)  # nobody took it

    def test_an_idle_connection_to_another_backend_is_closed_to_make_room(self) -> None:
        from tests.http.backend import URL

        self.client.request(b"GET", URL.replace(b"127.0.0.1", b"127.0.0.2") + b"/", Headers())
        self.request()
        self.network.accept_all()
        self.answer(self.OK, index=0)
        self.assertEqual(self.pool.idle_count(), 1)
        self.request()
        self.assertTrue(self.connection(0)[1].disconnecting)
