"""
Where a request body goes while it arrives (orchestrator.http.bodies): streamed to the
backend with flow control both ways, or counted and dropped.
"""

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface.verify import verifyObject

from orchestrator.http.bodies import BODY_BUFFER_LIMIT, DiscardedBody, StreamingBody


class StreamingBodyTests(SynchronousTestCase):
    def setUp(self):
        self.client = StringTransport()  # the client's connection: paused, resumed
        self.backend = StringTransport()  # what the backend connection was given
        self.body = StreamingBody(self.client, 100)

    def test_is_a_body_producer_of_the_announced_length(self):
        self.assertTrue(verifyObject(IBodyProducer, self.body))
        self.assertEqual(self.body.length, 100)
        self.assertEqual(StreamingBody(self.client, None).length, UNKNOWN_LENGTH)

    def test_what_came_before_the_backend_connected_is_sent_first(self):
        self.body.write(b"early ")
        self.body.startProducing(self.backend)
        self.body.write(b"late")
        self.assertEqual(self.backend.value(), b"early late")

    def test_a_slow_backend_pauses_the_client_and_its_resume_resumes_it(self):
        self.body.startProducing(self.backend)
        self.body.pauseProducing()
        self.assertEqual(self.client.producerState, "paused")
        self.body.write(b"held")
        self.assertEqual(self.backend.value(), b"")
        self.body.resumeProducing()
        self.assertEqual((self.backend.value(), self.client.producerState), (b"held", "producing"))

    def test_the_client_is_paused_once_too_much_waits_for_the_backend(self):
        self.body.write(b"x" * BODY_BUFFER_LIMIT)
        self.assertEqual(self.client.producerState, "producing")
        self.body.write(b"x")
        self.assertEqual(self.client.producerState, "paused")
        self.body.startProducing(self.backend)
        self.assertEqual(self.client.producerState, "producing")

    def test_the_body_is_done_once_complete_and_sent(self):
        done = self.body.startProducing(self.backend)
        self.body.pauseProducing()
        self.body.write(b"last")
        self.body.complete()
        self.assertNoResult(done)
        self.body.resumeProducing()
        self.successResultOf(done)

    def test_stopped_it_drops_the_rest_and_lets_the_client_go_on(self):
        self.body.write(b"x" * (BODY_BUFFER_LIMIT + 1))
        self.body.stopProducing()
        self.assertEqual(self.client.producerState, "producing")
        self.body.write(b"more")
        self.assertEqual(self.body.received, BODY_BUFFER_LIMIT + 5)
        self.assertEqual(self.backend.value(), b"")


class DiscardedBodyTests(SynchronousTestCase):
    def test_counts_and_keeps_nothing(self):
        body = DiscardedBody()
        body.write(b"hello")
        body.seek(0, 0)
        self.assertEqual((body.tell(), body.read()), (5, b""))
