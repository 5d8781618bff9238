"""
Request targets (orchestrator.http.targets): origin and absolute forms, what is refused,
and that no bytes make it fail otherwise.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.http.headers import is_valid_host
from orchestrator.http.targets import BadTarget, split_target


class SplitTargetTests(SynchronousTestCase):
    def test_an_origin_form_target_has_no_authority(self):
        self.assertEqual(split_target(b"/a/b?c=d"), (None, b"/a/b?c=d"))

    def test_an_absolute_form_target_gives_its_authority_and_path(self):
        self.assertEqual(split_target(b"http://a.example:8080/x?y"), (b"a.example:8080", b"/x?y"))

    def test_an_ipv6_authority(self):
        self.assertEqual(split_target(b"https://[::1]:443"), (b"[::1]:443", b"/"))

    def test_refused(self):
        for target in (b"*", b"a.example:443", b"ftp://a.example/", b"http://u@a.example/",
                       b"http://a.example:70000/", b"http://[::1/",
                       b"http:/a.example/", b"/a b", b"/\x7f", b"/\x80", b"/#x"):
            with self.subTest(target=target):
                self.assertRaises(BadTarget, split_target, target)

    @given(st.binary(max_size=60))
    def test_any_bytes_split_or_are_refused(self, target):
        try:
            authority, path = split_target(target)
        except BadTarget:
            return
        self.assertTrue(path.startswith(b"/"))
        self.assertTrue(path.isascii())
        if authority is not None:
            self.assertTrue(is_valid_host(authority))

    @given(st.from_regex(rb"\Ahttps?://[a-z0-9.:\[\]@-]{0,20}(/[!-~]{0,20})?\Z"))
    def test_url_like_targets_split_or_are_refused(self, target):
        try:
            split_target(target)
        except BadTarget:
            pass
