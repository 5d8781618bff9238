"""
Content negotiation for the waiting page and the C{Prefer: wait=N} preference.
"""

from __future__ import annotations

import math


def media_quality(accept: bytes, media_type: bytes) -> float:
    """
    The quality C{accept} gives C{media_type} (RFC 9110 section 12.5.1): the most
    specific matching range wins (C{text/html} over C{text/*} over C{*/*}); 0 if none.
    """
    kind = media_type.split(b"/", 1)[0]
    best_specificity, quality = -1, 0.0
    for item in accept.split(b","):
        parts = [part.strip() for part in item.split(b";")]
        media_range = parts[0].lower()
        if media_range == media_type:
            specificity = 2
        elif media_range == kind + b"/*":
            specificity = 1
        elif media_range == b"*/*":
            specificity = 0
        else:
            continue
        q = 1.0
        for parameter in parts[1:]:
            name, _, value = parameter.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0 or math.isnan(q):
                    q = 0.0
        if specificity > best_specificity:
            best_specificity, quality = specificity, q
    return quality


def prefers_html(accept: bytes | None) -> bool:
    """
    Whether a client prefers an HTML page to JSON: browsers navigating do
    (C{text/html,...,*/*;q=0.8}); C{curl} (C{*/*}) and API clients do not.
    """
    if not accept:
        return False
    html_quality = media_quality(accept, b"text/html")
    return html_quality > 0 and html_quality > media_quality(accept, b"application/json")


def prefer_wait(values: list[bytes] | None) -> float | None:
    """
    The C{wait} preference of C{Prefer} headers (RFC 7240), in seconds, or C{None}.
    """
    for value in values or ():
        for preference in value.split(b","):
            token = preference.split(b";", 1)[0].strip()
            name, _, argument = token.partition(b"=")
            if name.strip().lower() == b"wait":
                try:
                    seconds = float(argument.strip().strip(b'"'))
                except ValueError:
                    return None
                return seconds if seconds > 0 and math.isfinite(seconds) else None
    return None
