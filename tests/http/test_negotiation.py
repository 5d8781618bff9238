"""
Content negotiation for the waiting page, and C{Prefer: wait=N}.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.http.negotiation import media_quality, prefer_wait, prefers_html

CHROME_ACCEPT = (b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                 b"image/webp,*/*;q=0.8")


class NegotiationTests(SynchronousTestCase):
    def test_browser_navigation_prefers_html(self):
        self.assertTrue(prefers_html(CHROME_ACCEPT))

    def test_curl_and_api_clients_keep_json(self):
        for accept in (None, b"*/*", b"application/json", b"application/json, text/html;q=0.5"):
            self.assertFalse(prefers_html(accept), accept)

    def test_most_specific_range_decides(self):
        self.assertEqual(media_quality(b"text/*;q=0.3, text/html;q=0.7, */*;q=0.1", b"text/html"), 0.7)
        self.assertEqual(media_quality(b"text/*;q=0.3, */*;q=0.1", b"text/html"), 0.3)

    def test_html_refused_with_q_zero(self):
        self.assertFalse(prefers_html(b"text/html;q=0, */*"))

    @given(st.binary(max_size=60))
    def test_arbitrary_accept_headers_never_crash(self, accept):
        self.assertIn(prefers_html(accept), (True, False))

    @given(st.floats(0, 1), st.floats(0, 1))
    def test_html_wins_only_when_ranked_higher(self, html_q, json_q):
        accept = b"text/html;q=%.3f, application/json;q=%.3f" % (html_q, json_q)
        self.assertEqual(prefers_html(accept), round(html_q, 3) > round(json_q, 3))


class PreferWaitTests(SynchronousTestCase):
    def test_wait_preference_in_seconds(self):
        self.assertEqual(prefer_wait([b"wait=20"]), 20)
        self.assertEqual(prefer_wait([b"respond-async, wait=5; foo=bar"]), 5)

    def test_no_or_bad_wait_is_none(self):
        for values in (None, [b"respond-async"], [b"wait=soon"], [b"wait=-1"], [b"wait=inf"]):
            self.assertIsNone(prefer_wait(values), values)
