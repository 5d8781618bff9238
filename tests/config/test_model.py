"""
Tests for L{orchestrator.config.model}'s validators: a configuration built in code holds
the invariants of one read from the file, by the same rules, and a mistake raises an
error that names the class and the field.
"""

from __future__ import annotations

import ipaddress

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.hosts import parse_host
from orchestrator.config.model import (
    AdminConfig,
    AgentWebSocketConfig,
    Backend,
    ColdStart,
    ColdStartConfig,
    Config,
    ConsumerConfig,
    ConsumerType,
    DockerConfig,
    EventsConfig,
    HealthConfig,
    IdleConfig,
    LimitsConfig,
    ListenConfig,
    NodeShare,
    Policy,
    ProxyConfig,
    ProxyWebSocketConfig,
    ShutdownConfig,
)
from orchestrator.config.values import positive_duration
from tests.helpers import agent_config


class DefaultsTests(SynchronousTestCase):
    def test_every_section_is_valid_with_its_defaults(self) -> None:
        for section in (ListenConfig, DockerConfig, ProxyWebSocketConfig, ProxyConfig,
                        AdminConfig, ShutdownConfig, EventsConfig, IdleConfig, HealthConfig,
                        ColdStartConfig, AgentWebSocketConfig):
            section()

    def test_the_test_builder_makes_a_valid_agent(self) -> None:
        self.assertEqual(agent_config("beta").hosts, ("beta.example.com",))


class AgentConfigTests(SynchronousTestCase):
    """
    An agent's name, service, hosts and policy are checked as the file's are.
    """

    def assertRefused(self, error: type[Exception], message: str, **changes: object) -> None:
        raised = self.assertRaises(error, agent_config, **changes)
        self.assertEqual(str(raised), message)

    def test_a_bad_host_is_refused_by_its_index(self) -> None:
        self.assertRefused(
            ValueError,
            'AgentConfig.hosts[1]: expected a host name like "agent.example.com", got "*.com" '
            '(a wildcard needs at least two labels after "*.")',
            hosts=("a.example.com", "*.com"))

    def test_a_host_must_be_lower_case_already(self) -> None:
        self.assertRefused(
            ValueError,
            'AgentConfig.hosts[0]: got "A.example.com", expected its canonical form '
            '"a.example.com"',
            hosts=("A.example.com",))

    def test_an_empty_hosts_tuple_is_refused(self) -> None:
        self.assertRefused(ValueError,
                           "AgentConfig.hosts: expected at least one host, got an empty list",
                           hosts=())

    def test_hosts_must_be_a_tuple(self) -> None:
        self.assertRefused(TypeError, "AgentConfig.hosts: expected tuple, got a list",
                           hosts=["a.example.com"])

    def test_a_host_listed_twice_is_refused(self) -> None:
        self.assertRefused(ValueError,
                           'AgentConfig.hosts[1]: "a.example.com" is listed twice',
                           hosts=("a.example.com", "a.example.com"))

    def test_an_unknown_policy_is_refused(self) -> None:
        self.assertRefused(TypeError, 'AgentConfig.policy: expected Policy, got "sometimes"',
                           policy="sometimes")

    def test_a_negative_duration_is_refused(self) -> None:
        self.assertRefused(ValueError,
                           "AgentConfig.wake_retry: expected a duration of 0 or more, got -1",
                           wake_retry=-1)

    def test_a_duration_is_a_number_of_seconds_not_text(self) -> None:
        self.assertRefused(TypeError,
                           'AgentConfig.startup_timeout: expected int or float, got "1m"',
                           startup_timeout="1m")

    def test_the_name_follows_the_file_s_rule(self) -> None:
        self.assertRefused(
            ValueError,
            'AgentConfig.name: expected an agent name like "dutybound" (lower-case letters, '
            'digits, "_" and "-", at most 63 characters), got "Alpha"',
            name="Alpha")

    def test_the_service_follows_docker_s_rule(self) -> None:
        error = self.assertRaises(ValueError, agent_config, service="-bad")
        self.assertTrue(str(error).startswith("AgentConfig.service: expected a Swarm service"))

    def test_a_section_must_be_its_class(self) -> None:
        self.assertRefused(TypeError, "AgentConfig.idle: expected IdleConfig, got a mapping",
                           idle={"timeout": 60})

    def test_evolve_checks_the_new_value(self) -> None:
        agent = agent_config()
        self.assertEqual(attrs.evolve(agent, hosts=("b.example.com",)).hosts,
                         ("b.example.com",))
        self.assertRaises(ValueError, attrs.evolve, agent, hosts=())


class SectionTests(SynchronousTestCase):
    """
    The parts of an agent and of the whole configuration.
    """

    def test_a_zero_health_interval_is_refused(self) -> None:
        error = self.assertRaises(ValueError, HealthConfig, interval=0)
        self.assertEqual(str(error),
                         "HealthConfig.interval: expected a duration greater than 0, got 0")

    def test_a_negative_idle_timeout_is_refused(self) -> None:
        error = self.assertRaises(ValueError, IdleConfig, timeout=-5)
        self.assertEqual(str(error), "IdleConfig.timeout: expected a duration of 0 or more, got -5")

    def test_a_drain_timeout_may_be_zero(self) -> None:
        self.assertEqual(IdleConfig(drain_timeout=0).drain_timeout, 0)

    def test_a_boolean_is_not_a_count(self) -> None:
        error = self.assertRaises(TypeError, HealthConfig, failures=True)
        self.assertEqual(str(error), "HealthConfig.failures: expected int, got true")

    def test_a_health_path_starts_with_a_slash(self) -> None:
        self.assertRaises(ValueError, HealthConfig, path="health")

    def test_ignore_paths_are_checked_by_index(self) -> None:
        error = self.assertRaises(ValueError, IdleConfig, ignore_paths=("/ok", "status"))
        self.assertEqual(str(error), 'IdleConfig.ignore_paths[1]: expected a path starting '
                                     'with "/", got "status"')

    def test_an_origin_must_be_in_the_form_browsers_send(self) -> None:
        error = self.assertRaises(ValueError, AgentWebSocketConfig,
                                  allowed_origins=("https://app.example.com:443",))
        self.assertEqual(str(error), 'AgentWebSocketConfig.allowed_origins[0]: got '
                                     '"https://app.example.com:443", expected its canonical '
                                     'form "https://app.example.com"')

    def test_an_unknown_cold_start_mode_is_refused(self) -> None:
        self.assertRaises(TypeError, ColdStartConfig, mode="wait")
        self.assertEqual(ColdStartConfig(mode=ColdStart.HOLD).mode, ColdStart.HOLD)

    def test_trusted_proxies_are_networks(self) -> None:
        networks = (ipaddress.ip_network("10.0.0.0/8"),)
        self.assertEqual(ProxyConfig(trusted_proxies=networks).trusted_proxies, networks)
        self.assertRaises(ValueError, ProxyConfig, trusted_proxies=("10.0.0.0/8",))

    def test_the_front_doors_limits_hold_their_readers_rules(self) -> None:
        self.assertRaises(ValueError, ProxyConfig, body_timeout=0)
        self.assertRaises(ValueError, ProxyConfig, send_timeout=-1)
        self.assertRaises(ValueError, ProxyConfig, max_buffered_bytes=1024)
        self.assertRaises(ValueError, ProxyConfig, max_connections=0)
        self.assertRaises(ValueError, ProxyConfig, max_connections_per_client=0)
        self.assertRaises(ValueError, ProxyConfig, max_backend_connections=0)

    def test_a_max_header_size_is_a_positive_number_of_bytes(self) -> None:
        self.assertRaises(ValueError, ProxyConfig, max_header_bytes=0)
        self.assertRaises(TypeError, ProxyConfig, max_header_bytes="16KiB")


    def test_a_memory_budget_is_bytes_or_a_share_of_the_node(self) -> None:
        self.assertEqual(LimitsConfig(memory=1024).memory, 1024)
        self.assertEqual(LimitsConfig(memory=NodeShare(0.5)).memory, NodeShare(0.5))
        self.assertRaises(TypeError, LimitsConfig, memory="1GiB")
        error = self.assertRaises(ValueError, NodeShare, 1.5)
        self.assertEqual(str(error), "NodeShare.fraction: expected a number above 0 and at "
                                     "most 1, got 1.5")

    def test_no_budget_by_default_and_a_count_makes_one(self) -> None:
        self.assertFalse(LimitsConfig().limited)
        self.assertTrue(LimitsConfig(max_awake=2).limited)
        self.assertRaises(ValueError, LimitsConfig, max_awake=0)

    def test_an_agents_memory_is_bytes(self) -> None:
        self.assertEqual(agent_config("a", memory=4096).memory, 4096)
        self.assertRaises(ValueError, agent_config, "a", memory=0)


class BackendTests(SynchronousTestCase):
    def test_a_backend_of_the_file_s_form_is_valid(self) -> None:
        self.assertEqual(Backend("http", "::1", 8081).url, "http://[::1]:8081")

    def test_the_scheme_is_http_or_https(self) -> None:
        error = self.assertRaises(ValueError, Backend, "ftp", "tasks.x", 21)
        self.assertEqual(str(error), 'Backend.scheme: expected "http" or "https", got "ftp"')

    def test_the_port_is_from_1_to_65535(self) -> None:
        for port in (0, 65536):
            error = self.assertRaises(ValueError, Backend, "http", "tasks.x", port)
            self.assertEqual(str(error),
                             f"Backend.port: expected a port from 1 to 65535, got {port}")

    def test_the_host_follows_the_backend_url_s_rule(self) -> None:
        error = self.assertRaises(ValueError, Backend, "http", "tasks.mystack_demo", 80)
        self.assertIn('"tasks.demo" rather than "tasks.mystack_demo"', str(error))

    def test_an_ipv6_host_goes_without_brackets(self) -> None:
        self.assertRaises(ValueError, Backend, "http", "[::1]", 80)


class SecretTests(SynchronousTestCase):
    """
    A refused secret is never shown in the message.
    """

    def test_a_short_admin_token_is_refused_without_showing_it(self) -> None:
        error = self.assertRaises(ValueError, AdminConfig, token="hunter2")
        self.assertEqual(str(error),
                         "AdminConfig.token: expected a token of at least 16 characters")

    def test_a_consumer_url_is_refused_without_showing_it(self) -> None:
        error = self.assertRaises(ValueError, ConsumerConfig, ConsumerType.WEBHOOK,
                                  "ftp://hooks.example/T0-xyzzy")
        self.assertEqual(str(error), "ConsumerConfig.url: expected an http or https URL "
                                     "(not shown: it may be a secret)")


class ConfigTests(SynchronousTestCase):
    """
    A host routes to one agent, and agents have names of their own.
    """

    def test_two_agents_with_one_name_are_refused(self) -> None:
        error = self.assertRaises(ValueError, Config, source="x", agents=(
            agent_config("alpha"), agent_config("alpha", hosts=("other.example.com",))))
        self.assertEqual(str(error), 'Config.agents[1]: a second agent called "alpha"')

    def test_a_host_claimed_by_two_agents_is_refused(self) -> None:
        error = self.assertRaises(ValueError, Config, source="x", agents=(
            agent_config("alpha"), agent_config("beta", hosts=("alpha.example.com",))))
        self.assertEqual(str(error), 'Config.agents: beta.hosts[0]: "alpha.example.com" is '
                                     'already claimed by agent "alpha"')

    def test_agents_must_be_agent_configs(self) -> None:
        self.assertRaises(ValueError, Config, source="x", agents=("alpha",))


class SameRuleTests(SynchronousTestCase):
    """
    The model and the file's readers apply one rule: what one refuses, the other does.
    """

    @given(st.one_of(st.text(max_size=40),
                     st.from_regex(r"(\*\.)?[a-zA-Z0-9-]{1,8}(\.[a-zA-Z0-9-]{1,8}){0,3}",
                                   fullmatch=True)))
    def test_a_host_is_valid_in_code_iff_the_file_reads_it_as_itself(self, host: str) -> None:
        try:
            read = parse_host(host)
        except ValueError:
            self.assertRaises(ValueError, agent_config, hosts=(host,))
            return
        if read == host:
            self.assertEqual(agent_config(hosts=(host,)).hosts, (host,))
        else:
            self.assertRaises(ValueError, agent_config, hosts=(host,))

    @given(st.one_of(st.integers(), st.floats()))
    def test_a_timeout_is_valid_in_code_iff_the_file_accepts_it(self, seconds: float) -> None:
        try:
            positive_duration(seconds)
        except ValueError:
            self.assertRaises(ValueError, HealthConfig, timeout=seconds)
        else:
            self.assertEqual(HealthConfig(timeout=seconds).timeout, seconds)


class PolicyTests(SynchronousTestCase):
    def test_always_on_is_a_policy(self) -> None:
        self.assertIs(agent_config(policy=Policy.ALWAYS_ON).policy, Policy.ALWAYS_ON)
