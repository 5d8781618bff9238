"""
The relay's keys in the configuration file (parsed by orchestrator.config.schema); kept
beside the relay's tests until the configuration's own tests are split by module.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import (
    AgentWebSocketConfig,
    ProxyWebSocketConfig,
)
from orchestrator.config.readers import ConfigError
from orchestrator.config.schema import parse_config


class ConfigTests(SynchronousTestCase):
    """
    The relay's keys in the configuration file: defaults, values, and mistakes.
    """

    def parse(self, text: str):
        return parse_config(text, "orchestrator.yaml")

    def test_defaults(self):
        config = self.parse("agents: {a: {backend: 'http://a:1', hosts: [a.example.com]}}")
        self.assertEqual(config.proxy.websocket, ProxyWebSocketConfig(
            handshake_timeout=10.0, ping_interval=30.0, ping_timeout=10.0))
        self.assertEqual(config.agent("a").websocket, AgentWebSocketConfig(
            allowed_origins=(), max_connections=1000, max_message_size=16 * 1024 * 1024))

    def test_values(self):
        config = self.parse("""
proxy: {websocket: {handshake_timeout: 5s, ping_interval: 0, ping_timeout: 2s}}
agents:
  a:
    backend: 'http://a:1'
    hosts: [a.example.com]
    websocket:
      allowed_origins: ["https://App.example.com:443", "https://*.example.org", "null"]
      max_connections: 10
      max_message_size: 1MiB
""")
        self.assertEqual(config.proxy.websocket, ProxyWebSocketConfig(5.0, 0.0, 2.0))
        self.assertEqual(config.agent("a").websocket, AgentWebSocketConfig(
            ("https://app.example.com", "https://*.example.org", "null"), 10, 1024 * 1024))

    def test_every_mistake_is_reported_with_its_key(self):
        error = self.assertRaises(ConfigError, self.parse, """
proxy: {websocket: {handshake_timeout: 0, ping_intervall: 1s}}
agents:
  a:
    backend: 'http://a:1'
    hosts: [a.example.com]
    websocket:
      allowed_origins: ["https://app.example.com/path", "https://*.com"]
      max_connections: 0
      max_message_size: lots
""")
        self.assertEqual(error.problems, [
            "orchestrator.yaml: proxy.websocket.handshake_timeout: expected a duration greater"
            ' than 0, got 0',
            'orchestrator.yaml: proxy.websocket.ping_intervall: unknown key, did you mean '
            '"ping_interval"?',
            'orchestrator.yaml: agents.a.websocket.allowed_origins[0]: expected an origin like'
            ' "https://app.example.com", got "https://app.example.com/path"',
            'orchestrator.yaml: agents.a.websocket.allowed_origins[1]: expected an origin like'
            ' "https://app.example.com", got "https://*.com"',
            "orchestrator.yaml: agents.a.websocket.max_connections: expected a positive "
            "integer, got 0",
            'orchestrator.yaml: agents.a.websocket.max_message_size: expected a size in bytes '
            'like 16384 or "16KiB", got "lots"',
        ])
