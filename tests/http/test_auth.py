"""
Bearer credentials as RFC 9110 spells them, and the constant-time comparison.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.http.auth import bearer_token, token_is


class BearerTests(SynchronousTestCase):
    def test_the_scheme_is_case_insensitive(self):
        for value in (b"Bearer abc", b"bearer abc", b"BEARER abc", b"  Bearer   abc  "):
            with self.subTest(value=value):
                self.assertEqual(bearer_token([value]), b"abc")

    def test_a_token68_may_end_with_padding(self):
        self.assertEqual(bearer_token([b"Bearer dG9rZW4+/x=="]), b"dG9rZW4+/x==")

    def test_anything_else_is_no_token(self):
        for values in (None, [], [b"Bearer a", b"Bearer b"], [b"Basic YWI6Y2Q="],
                       [b"Bearer"], [b"Bearer a b"], [b"Bearer a,b"], [b"Bearer\ta"],
                       [b"Bearer \xff"], [b"Bearer a=b"]):
            with self.subTest(values=values):
                self.assertIsNone(bearer_token(values))

    @given(st.binary(max_size=40))
    def test_a_token_found_is_made_of_token68_characters(self, data):
        token = bearer_token([data])
        if token is not None:
            self.assertRegex(token, rb"\A[A-Za-z0-9._~+/-]+=*\Z")


class ComparisonTests(SynchronousTestCase):
    def test_only_the_same_token_matches(self):
        self.assertTrue(token_is(b"s3cret-token-value", "s3cret-token-value"))
        self.assertFalse(token_is(b"s3cret-token-valuX", "s3cret-token-value"))
        self.assertFalse(token_is(b"s3cret", "s3cret-token-value"))
        self.assertFalse(token_is(None, "s3cret-token-value"))
        self.assertFalse(token_is(b"anything", None))
