"""
HTTP pieces below the proxy: header rules, content negotiation, the answers the proxy makes
itself, the backend HTTP/1.1 client and its endpoints, and error descriptions.
"""
