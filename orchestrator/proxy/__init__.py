"""
The public listener: the hardened HTTP/1.1 edge (frontdoor), routing by Host (root), the
streaming relay to a backend (exchange), held requests (holding) and the waiting page
(waiting).
"""
