"""
Bearer tokens (RFC 6750) as RFC 9110 section 11 spells credentials: the scheme in any
case, one space or more, a token68; compared in constant time.
"""

from __future__ import annotations

import hmac
import re

# token68 (RFC 9110 section 11.2).
_CREDENTIALS = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([A-Za-z0-9._~+/-]+=*)")


def bearer_token(values: list[bytes] | None) -> bytes | None:
    """
    The token of the one C{Authorization} header's C{Bearer} credentials, or C{None}
    when there is no such header, several, another scheme, or a malformed one.
    """
    if not values or len(values) != 1:
        return None
    match = _CREDENTIALS.fullmatch(values[0].strip(b" \t"))
    if match is None or match[1].lower() != b"bearer":
        return None
    return match[2]


def token_is(given: bytes | None, expected: str | None) -> bool:
    """
    Whether C{given} is C{expected}, taking as long for any C{given} of a length (so
    the time it takes tells nothing of how much of a guess was right).
    """
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given, expected.encode("utf-8"))
