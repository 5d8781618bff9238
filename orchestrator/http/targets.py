"""
Request targets (RFC 9112 section 3.2): the origin form a proxy forwards, and the
authority of an absolute-form target, which wins over C{Host} (section 3.2.2). Pure
functions over bytes.
"""

from __future__ import annotations

import re

from orchestrator.http.headers import is_valid_host

# Visible ASCII but "#": RFC 3986's characters, leniently (as nginx is, "|" and "{" pass:
# some clients send them unencoded). DEL, bytes from 0x80 up and fragments are refused;
# Twisted refuses what is at or below 0x20 and, by a typo, only what is above 0xB0.
_TARGET_BYTES = re.compile(rb"[\x21\x22\x24-\x7e]+")
_ABSOLUTE = re.compile(rb"(https?)://([^/?]*)(.*)", re.IGNORECASE | re.DOTALL)


class BadTarget(ValueError):
    """
    A request target the proxy refuses (400); the message says why.
    """


def split_target(target: bytes) -> tuple[bytes | None, bytes]:
    """
    The authority (C{None} for an origin-form target) and the origin-form path and query
    of a request target: C{b"http://a.example/x?y"} -> C{(b"a.example", b"/x?y")}.

    @raise BadTarget: for bytes no target may hold, a form other than origin or an
        C{http}/C{https} absolute form, or an authority that is no valid C{Host} (user
        info, a bad port or IPv6 literal, no host at all).
    """
    if target[:1] == b"/":
        if not _TARGET_BYTES.fullmatch(target):
            raise BadTarget("the request target holds bytes a URL may not")
        return None, target
    if not _TARGET_BYTES.fullmatch(target):
        raise BadTarget("the request target holds bytes a URL may not")
    absolute = _ABSOLUTE.fullmatch(target)
    if absolute is None:
        raise BadTarget("the request target must be a path or an http(s) URL")
    _, authority, rest = absolute.groups()
    if not authority or not is_valid_host(authority):
        raise BadTarget("the request target's authority is not a valid host")
    if rest[:1] == b"?":
        rest = b"/" + rest
    return authority, rest or b"/"
