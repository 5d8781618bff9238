"""
Where the demo's webhook consumer sends the orchestrator's events: every JSON document
POSTed to /events is printed as one line to stdout, so `docker service logs -f
orchestrator_event-sink` shows agents waking, becoming ready and going to sleep.

    POST /events   a JSON event: printed, answered 204; anything else that is not JSON: 400
    GET  /health   200 "ok"

Environment: PORT (default 8082). In the stack it is on a network of its own that only
the orchestrator shares, so nothing else can post to it or read it.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import endpoints, reactor
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

log = Logger()

#: A webhook body larger than this is not an event.
MAX_BODY = 64 * 1024


class Events(Resource):
    """
    Print each POSTed event as a line of JSON.
    """

    isLeaf = True

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def render_POST(self, request):
        body = request.content.read(MAX_BODY + 1)
        try:
            if len(body) > MAX_BODY:
                raise ValueError("too large")
            event = json.loads(body)
        except ValueError:
            request.setResponseCode(400)
            return b"expected one JSON event\n"
        self.out.write(json.dumps(event, sort_keys=True) + "\n")
        self.out.flush()
        request.setResponseCode(204)
        return b""


class Health(Resource):
    """
    200 "ok".
    """

    isLeaf = True

    def render_GET(self, request):
        return b"ok"


class QuietSite(Site):
    """
    A site without an access log: the events are the output.
    """

    def log(self, request) -> None:
        pass


def make_site(out) -> Site:
    root = Resource()
    root.putChild(b"events", Events(out))
    root.putChild(b"health", Health())
    return QuietSite(root)


def main() -> None:
    # Twisted's own messages go to stderr; stdout holds only the events.
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                     redirectStandardIO=False)
    port = int(os.environ.get("PORT", "8082"))
    endpoints.TCP4ServerEndpoint(reactor, port).listen(make_site(sys.stdout))
    log.info("event sink listening on port {port}", port=port)
    reactor.run()


if __name__ == "__main__":
    main()
