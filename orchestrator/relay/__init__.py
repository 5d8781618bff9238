"""
The Autobahn WebSocket relay: the pure handshake rules (handshake), the two legs (legs),
one relayed socket (socket) and the upgrade that takes a connection over (upgrade).
"""
