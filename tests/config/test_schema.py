"""
Tests for L{orchestrator.config.schema}: what a valid file means, and how every mistake
in one is reported (all at once, each with the file, the key path and what was expected).
"""

from __future__ import annotations

import ipaddress
import os

import yaml
from hypothesis import given
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.model import (
    DEFAULT_DOCKER_URL,
    AgentApiConfig,
    AgentConfig,
    Backend,
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
    RegistrationConfig,
    ShutdownConfig,
)
from orchestrator.config.readers import ConfigError, Issue
from orchestrator.config.schema import load_config, parse_agent, parse_config

from .helpers import SOURCE, ConfigTestCase, make_agent, make_document, parse

EXAMPLE = FilePath(__file__).parent().parent().sibling("examples").child("orchestrator.yaml")


class ExampleTests(ConfigTestCase):
    """
    The example shipped in examples/ is valid and means what its comments say.
    """

    def test_example_file_parses(self) -> None:
        config = load_config(EXAMPLE.path)
        self.assertEqual(
            config,
            Config(
                source=EXAMPLE.path,
                listen=ListenConfig(proxy="tcp:8080", admin="tcp:9090:interface=127.0.0.1"),
                docker=DockerConfig(url="unix:///var/run/docker.sock", timeout=30.0),
                proxy=ProxyConfig(
                    trusted_proxies=(ipaddress.ip_network("192.0.2.10/32"),),
                    header_timeout=10.0,
                    max_header_bytes=16384,
                    connect_timeout=5.0,
                    response_timeout=60.0,
                    idle_connection_timeout=60.0,
                    retry_after=3,
                ),
                shutdown=ShutdownConfig(drain_timeout=30.0),
                events=EventsConfig(log_file="/var/log/orchestrator/events.jsonl"),
                limits=LimitsConfig(max_awake=10, memory=NodeShare(0.75),
                                    default_memory=256 * 1024 ** 2),
                agents=(
                    AgentConfig(
                        name="dutybound",
                        service="dutybound",
                        backend=Backend("http", "tasks.dutybound", 8081),
                        hosts=("dutybound.example.com", "*.dutybound.example.com"),
                        policy=Policy.ON_DEMAND,
                        startup_timeout=60.0,
                        wake_retry=30.0,
                        idle=IdleConfig(
                            timeout=900.0,
                            drain_timeout=30.0,
                            ignore_paths=("/healthz", "/status/*"),
                            ignore_user_agents=("UptimeRobot",),
                        ),
                        health=HealthConfig(
                            path="/health", interval=10.0, timeout=2.0, failures=3
                        ),
                    ),
                ),
            ),
        )


class DefaultsTests(ConfigTestCase):
    """
    Only C{agents} is required, and per agent C{backend} and C{hosts}.
    """

    def test_empty_agents_is_a_valid_configuration(self) -> None:
        config = parse({"agents": {}})
        self.assertEqual(config.agents, ())

    def test_sections_left_out_get_their_defaults(self) -> None:
        self.patch(os, "environ", {})
        config = parse({"agents": {}})
        self.assertEqual(
            (config.listen, config.docker, config.proxy, config.shutdown, config.events),
            (ListenConfig(), DockerConfig(), ProxyConfig(), ShutdownConfig(), EventsConfig()),
        )

    def test_docker_url_defaults_to_docker_host(self) -> None:
        self.patch(os, "environ", {"DOCKER_HOST": "tcp://manager:2376"})
        self.assertEqual(parse({"agents": {}}).docker.url, "tcp://manager:2376")

    def test_docker_url_defaults_to_the_local_socket_without_docker_host(self) -> None:
        self.patch(os, "environ", {})
        self.assertEqual(parse({"agents": {}}).docker.url, DEFAULT_DOCKER_URL)

    def test_agent_fields_left_out_get_their_defaults(self) -> None:
        agent = parse(make_document()).agent("dutybound")
        self.assertEqual(
            (agent.policy, agent.startup_timeout, agent.wake_retry, agent.idle, agent.health),
            (Policy.ON_DEMAND, 60.0, 30.0, IdleConfig(), HealthConfig()),
        )

    def test_service_defaults_to_the_agent_name(self) -> None:
        self.assertEqual(parse(make_document()).agent("dutybound").service, "dutybound")

    def test_service_can_differ_from_the_agent_name(self) -> None:
        document = make_document({"dutybound": make_agent(service="stack_dutybound")})
        self.assertEqual(parse(document).agent("dutybound").service, "stack_dutybound")

    def test_agents_keep_the_order_of_the_file(self) -> None:
        agents = {
            name: make_agent(hosts=[f"{name}.example.com"]) for name in ("zeta", "alpha", "mid")
        }
        config = parse(make_document(agents))
        self.assertEqual([agent.name for agent in config.agents], ["zeta", "alpha", "mid"])

    def test_source_is_recorded(self) -> None:
        self.assertEqual(parse({"agents": {}}).source, SOURCE)


class ReportingTests(ConfigTestCase):
    """
    Every problem is reported, each on its own line, before anything starts.
    """

    def test_every_problem_is_reported_at_once(self) -> None:
        text = (
            "proxy:\n"
            "  retry_after: soon\n"
            "agents:\n"
            "  dutybound:\n"
            "    backend: ftp://tasks.dutybound\n"
            "    hosts: [dutybound.example.com]\n"
            "    idle: {timeout: soon}\n"
        )
        self.assertEqual(
            self.problems(text),
            [
                f'{SOURCE}: proxy.retry_after: expected a positive integer, got "soon"',
                f"{SOURCE}: agents.dutybound.backend: expected a URL like "
                '"http://tasks.dutybound:8081", got "ftp://tasks.dutybound" '
                "(the scheme must be http or https)",
                f"{SOURCE}: agents.dutybound.idle.timeout: "
                'expected a duration like "15m", got "soon"',
            ],
        )

    def test_config_error_message_has_one_line_per_problem(self) -> None:
        error = self.assertRaises(ConfigError, parse, {"agents": {"x": {}}})
        self.assertEqual(str(error).splitlines(), error.problems)

    def test_config_error_carries_each_key_path_and_message(self) -> None:
        document = make_document({"dutybound": make_agent(idle={"timeout": "soon"})},
                                 proxy={"retry_after": 0})
        error = self.assertRaises(ConfigError, parse, document)
        self.assertEqual((error.source, error.issues), (SOURCE, (
            Issue("proxy.retry_after", "expected a positive integer, got 0"),
            Issue("agents.dutybound.idle.timeout", 'expected a duration like "15m", got "soon"'),
        )))

    def test_a_problem_with_the_whole_file_has_an_empty_path(self) -> None:
        error = self.assertRaises(ConfigError, parse_config, "- agents\n", SOURCE)
        self.assertEqual(error.issues, (Issue("", "expected a mapping, got a list"),))

    def test_unknown_key_suggests_the_close_one(self) -> None:
        document = make_document({"dutybound": make_agent(idle={"timout": "5m"})})
        self.assertProblem(
            document, 'agents.dutybound.idle.timout: unknown key, did you mean "timeout"?'
        )

    def test_unknown_key_without_a_close_one_lists_the_known_ones(self) -> None:
        self.assertProblem(
            make_document(shutdown={"whenever": 1}),
            'shutdown.whenever: unknown key, expected one of "drain_timeout"',
        )

    def test_unknown_top_level_key_is_an_error(self) -> None:
        self.assertProblem(make_document(agent={}), 'agent: unknown key, did you mean "agents"?')

    def test_missing_agents_is_an_error(self) -> None:
        self.assertProblem({"listen": {"proxy": "tcp:8080"}}, "agents: required")

    def test_empty_file_is_missing_agents(self) -> None:
        self.assertProblem("", "agents: required")

    def test_missing_backend_and_hosts_are_both_reported(self) -> None:
        self.assertEqual(
            self.problems(make_document({"dutybound": {}})),
            [
                f"{SOURCE}: agents.dutybound.backend: required",
                f"{SOURCE}: agents.dutybound.hosts: required",
            ],
        )

    def test_wrong_type_names_the_expected_type(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(health={"failures": "three"})}),
            'agents.dutybound.health.failures: expected a positive integer, got "three"',
        )

    def test_section_that_is_not_a_mapping_is_an_error(self) -> None:
        self.assertProblem(
            make_document(listen="tcp:8080"), 'listen: expected a mapping, got "tcp:8080"'
        )

    def test_agents_must_be_a_mapping(self) -> None:
        self.assertProblem({"agents": ["dutybound"]}, "agents: expected a mapping, got a list")

    def test_agents_left_empty_is_an_error(self) -> None:
        self.assertProblem("agents:\n", "agents: expected a mapping, got null")

    def test_document_that_is_not_a_mapping_is_an_error(self) -> None:
        self.assertProblem("- agents\n", "expected a mapping, got a list")

    def test_list_items_are_reported_by_index(self) -> None:
        self.assertProblem(
            make_document(proxy={"trusted_proxies": ["10.0.0.0/8", "nope"]}),
            'proxy.trusted_proxies[1]: expected an IP address or network like "10.0.0.0/8", '
            'got "nope"',
        )

    def test_boolean_is_not_a_number(self) -> None:
        self.assertProblem(
            make_document(proxy={"retry_after": True}),
            "proxy.retry_after: expected a positive integer, got true",
        )


class LoadConfigTests(SynchronousTestCase):
    """
    L{load_config} reads a file and names it in every problem.
    """

    def test_missing_file_is_an_error_naming_it(self) -> None:
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            error.problems, [f"{path}: cannot read the file: No such file or directory"]
        )

    def test_problems_name_the_file(self) -> None:
        path = FilePath(self.mktemp())
        path.setContent(b"agents: {x: {}}\n")
        error = self.assertRaises(ConfigError, load_config, path.path)
        self.assertEqual(error.problems[0], f"{path.path}: agents.x.backend: required")

    def test_file_that_is_not_utf8_is_an_error(self) -> None:
        path = FilePath(self.mktemp())
        path.setContent(b"agents: {}\n# \xff\n")
        error = self.assertRaises(ConfigError, load_config, path.path)
        self.assertEqual(
            error.problems, [f"{path.path}: not UTF-8 text: invalid start byte at offset 13"]
        )


class DurationTests(ConfigTestCase):
    """
    Durations in the file: a bad one is reported at its key; timeouts must be greater than 0.
    """

    def test_bad_duration_in_the_file_names_its_key(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(idle={"timeout": "soon"})}),
            'agents.dutybound.idle.timeout: expected a duration like "15m", got "soon"',
        )

    def test_timeouts_must_be_greater_than_zero(self) -> None:
        self.assertProblem(
            make_document(proxy={"connect_timeout": "0s"}),
            'proxy.connect_timeout: expected a duration greater than 0, got "0s"',
        )

    def test_drain_timeouts_may_be_zero(self) -> None:
        document = make_document(
            {"dutybound": make_agent(idle={"drain_timeout": 0})}, shutdown={"drain_timeout": 0}
        )
        config = parse(document)
        self.assertEqual(
            (config.shutdown.drain_timeout, config.agent("dutybound").idle.drain_timeout),
            (0.0, 0.0),
        )


class DurationPropertyTests(ConfigTestCase):
    @given(st.one_of(st.text(), st.integers(), st.floats(), st.lists(st.integers())))
    def test_garbage_in_the_file_is_one_problem_at_its_key(self, value: object) -> None:
        document = make_document({"dutybound": make_agent(wake_retry=value)})
        try:
            parse(document)
        except ConfigError as error:
            self.assertEqual(len(error.problems), 1)
            self.assertTrue(
                error.problems[0].startswith(f"{SOURCE}: agents.dutybound.wake_retry: ")
            )


class HostTests(ConfigTestCase):
    """
    An agent's hosts: a non-empty list, each host claimed by one agent only.
    """

    def test_hosts_must_be_a_non_empty_list(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(hosts=[])}),
            "agents.dutybound.hosts: expected at least one host, got an empty list",
        )

    def test_bad_host_is_reported_by_index(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(hosts=["ok.example.com", "*.com"])}),
            'agents.dutybound.hosts[1]: expected a host name like "agent.example.com", '
            'got "*.com" (a wildcard needs at least two labels after "*.")',
        )

    def test_host_claimed_by_two_agents_names_both(self) -> None:
        agents = {
            "first": make_agent(hosts=["shared.example.com"]),
            "second": make_agent(hosts=["Shared.Example.com"]),
        }
        self.assertProblem(
            make_document(agents),
            'agents.second.hosts[0]: "shared.example.com" is already claimed by agent "first"',
        )

    def test_host_listed_twice_by_one_agent_is_an_error(self) -> None:
        document = make_document(
            {"dutybound": make_agent(hosts=["a.example.com", "A.example.com"])}
        )
        self.assertProblem(document, 'agents.dutybound.hosts[1]: "a.example.com" is listed twice')

    def test_duplicate_host_is_found_even_when_the_agent_has_other_problems(self) -> None:
        agents = {
            "first": make_agent(hosts=["shared.example.com"]),
            "second": make_agent(hosts=["shared.example.com"], policy="sometimes"),
        }
        self.assertEqual(len(self.problems(make_document(agents))), 2)

    def test_same_wildcard_and_exact_name_do_not_clash(self) -> None:
        agents = {
            "first": make_agent(hosts=["example.com"]),
            "second": make_agent(hosts=["*.example.com"]),
        }
        self.assertEqual(len(parse(make_document(agents)).agents), 2)


class ParseAgentTests(SynchronousTestCase):
    """
    L{parse_agent} reads one agent apart from the file (JSON to a registration API), as
    the file's C{agents.NAME} is read, with paths relative to the agent.
    """

    def issues(self, name: str, mapping: object) -> tuple[Issue, ...]:
        error = self.assertRaises(ConfigError, parse_agent, name, mapping)
        self.assertIsNone(error.source)
        return error.issues

    def test_an_agent_is_read_as_the_file_reads_it(self) -> None:
        self.assertEqual(parse_agent("dutybound", make_agent(idle={"timeout": "5m"})),
                         parse(make_document({"dutybound": make_agent(idle={"timeout": "5m"})}))
                         .agent("dutybound"))

    def test_paths_are_relative_to_the_agent(self) -> None:
        self.assertEqual(
            self.issues("dutybound", make_agent(idle={"timeout": "soon"}, hosts=["a.b.c", "*.c"])),
            (Issue("hosts[1]", 'expected a host name like "agent.example.com", got "*.c" '
                               '(a wildcard needs at least two labels after "*.")'),
             Issue("idle.timeout", 'expected a duration like "15m", got "soon"')))

    def test_problem_lines_start_with_the_path(self) -> None:
        error = self.assertRaises(ConfigError, parse_agent, "dutybound", {"hosts": ["a.b.c"]})
        self.assertEqual(error.problems, ["backend: required"])

    def test_a_bad_name_is_a_problem_of_the_agent_itself(self) -> None:
        [issue] = self.issues("Dutybound", make_agent())
        self.assertEqual(issue.path, "")
        self.assertTrue(issue.message.startswith('expected an agent name like "dutybound"'))

    def test_a_value_that_is_not_a_mapping_is_a_problem_of_the_agent_itself(self) -> None:
        self.assertEqual(self.issues("dutybound", ["backend"]),
                         (Issue("", "expected a mapping, got a list"),))

    def test_a_host_listed_twice_is_a_problem_of_the_agent(self) -> None:
        self.assertEqual(self.issues("dutybound", make_agent(hosts=["a.b.c", "A.b.c"])),
                         (Issue("hosts[1]", '"a.b.c" is listed twice'),))


def one_of_values(*values: object) -> st.SearchStrategy:
    return st.sampled_from(values)


def section(**keys: st.SearchStrategy) -> st.SearchStrategy:
    """
    Mappings with some of C{keys}, and sometimes a key no section knows.
    """
    keys = {**keys, "colour": st.just("red")}
    return st.lists(st.sampled_from(sorted(keys)), unique=True, max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({key: keys[key] for key in chosen}))


durations = one_of_values(30, 0, -1, 2.5, "15m", "soon", "0s", True, None, [])
counts = one_of_values(1, 3, 0, -2, 1.5, "three", True)
host_values = one_of_values("a.example.com", "A.Example.com", "b.example.com", "*.com",
                            "x.example.com:80", "[::1]", 7, None)

agent_sections = section(
    service=one_of_values("dutybound", "stack_dutybound", "-bad", "a" * 64, 5),
    backend=one_of_values("http://tasks.x:8081", "https://[::1]", "ftp://x", "http://a_b",
                          "http://x/api", 8081),
    hosts=st.one_of(st.lists(host_values, max_size=4), host_values),
    policy=one_of_values("on_demand", "always_on", "sometimes", 1),
    startup_timeout=durations,
    wake_retry=durations,
    idle=st.one_of(section(timeout=durations, drain_timeout=durations,
                           ignore_paths=st.lists(one_of_values("/ok", "/s/*", "no", 3),
                                                 max_size=2),
                           ignore_user_agents=st.lists(one_of_values("Bot", "", 4),
                                                       max_size=2)),
                   one_of_values("15m", [])),
    health=section(path=one_of_values("/health", "health"), interval=durations,
                   timeout=durations, failures=counts),
    websocket=section(allowed_origins=st.lists(
                          one_of_values("https://a.example.com", "null", "nope", 5),
                          max_size=2),
                      max_connections=counts,
                      max_message_size=one_of_values(1024, "16KiB", "0KiB", -1, "big")),
    cold_start=section(mode=one_of_values("hold", "reject", "wait"), hold_timeout=durations,
                       max_held=counts, page=one_of_values("/nonexistent/page.html")),
)

#: Agent mappings, most with mistakes: a value of the wrong kind or out of range, an
#: unknown key, a required one missing, a host listed twice, or no mapping at all; some
#: valid agents among them.
agent_mappings = st.one_of(
    agent_sections.map(lambda fields: {**make_agent(), **fields}),
    agent_sections,
    one_of_values([], "dutybound", None, 5),
)


class ParseAgentPropertyTests(SynchronousTestCase):
    @given(one_of_values("dutybound", "agent_2-b", "Dutybound", "bad name"), agent_mappings)
    def test_a_mistake_is_at_the_same_path_in_the_file_under_agents_name(
        self, name: str, mapping: object
    ) -> None:
        try:
            agent, agent_issues = parse_agent(name, mapping), None
        except ConfigError as error:
            agent, agent_issues = None, error.issues
        text = yaml.safe_dump({"agents": {name: mapping}}, sort_keys=False)
        try:
            config, file_issues = parse_config(text, SOURCE), None
        except ConfigError as error:
            config, file_issues = None, error.issues
        if agent_issues is None:
            self.assertEqual((file_issues, config.agents), (None, (agent,)))
        else:
            self.assertEqual(file_issues, tuple(
                Issue(f"agents.{name}.{issue.path}" if issue.path else f"agents.{name}",
                      issue.message)
                for issue in agent_issues))


class AgentTests(ConfigTestCase):
    """
    An agent's name, service, backend and policy.
    """

    def test_agent_name_must_be_lower_case(self) -> None:
        document = make_document({"Dutybound": make_agent()})
        self.assertProblem(
            document,
            'agents.Dutybound: expected an agent name like "dutybound" (lower-case letters, '
            'digits, "_" and "-", at most 63 characters), got "Dutybound"',
        )

    def test_agent_with_a_bad_name_has_only_the_name_problem(self) -> None:
        # Its service would default to the name, no Swarm service name either.
        problems = self.problems(make_document({"bad name": make_agent()}))
        self.assertEqual(len(problems), 1)
        self.assertIn("agents.bad name: expected an agent name", problems[0])

    def test_agent_name_may_have_digits_hyphens_and_underscores(self) -> None:
        document = make_document({"agent_2-b": make_agent()})
        self.assertEqual(parse(document).agents[0].name, "agent_2-b")

    def test_service_name_follows_docker_rules(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(service="-bad")}),
            'agents.dutybound.service: expected a Swarm service name (letters, digits, "_", '
            '"." and "-", at most 63 characters), got "-bad"',
        )

    def test_service_name_longer_than_63_is_an_error(self) -> None:
        problems = self.problems(make_document({"dutybound": make_agent(service="a" * 64)}))
        self.assertEqual(len(problems), 1)

    def test_policy_always_on(self) -> None:
        document = make_document({"dutybound": make_agent(policy="always_on")})
        self.assertEqual(parse(document).agent("dutybound").policy, Policy.ALWAYS_ON)

    def test_unknown_policy_is_an_error(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(policy="sometimes")}),
            'agents.dutybound.policy: expected "on_demand" or "always_on", got "sometimes"',
        )

    def test_backend_port_defaults_to_80_for_http(self) -> None:
        document = make_document({"dutybound": make_agent(backend="http://tasks.dutybound")})
        self.assertEqual(
            parse(document).agent("dutybound").backend, Backend("http", "tasks.dutybound", 80)
        )

    def test_backend_port_defaults_to_443_for_https(self) -> None:
        document = make_document({"dutybound": make_agent(backend="https://tasks.dutybound/")})
        self.assertEqual(
            parse(document).agent("dutybound").backend, Backend("https", "tasks.dutybound", 443)
        )

    def test_backend_may_be_an_ipv6_address(self) -> None:
        document = make_document({"dutybound": make_agent(backend="http://[::1]:8081")})
        self.assertEqual(parse(document).agent("dutybound").backend, Backend("http", "::1", 8081))

    def test_backend_refusals(self) -> None:
        reasons = {
            "ftp://tasks.x": "the scheme must be http or https",
            "http://user:secret@tasks.x": "user info is not allowed",
            "http://tasks.x/api": "a path is not allowed",
            "http://tasks.x/?a=1": "a query or fragment is not allowed",
            "http://tasks.x:0": "the port must be from 1 to 65535",
            "http://:8081": "a host is required",
            "tasks.x:8081": "the scheme must be http or https",
        }
        for url, reason in reasons.items():
            self.assertProblem(
                make_document({"dutybound": make_agent(backend=url)}),
                f'agents.dutybound.backend: expected a URL like "http://tasks.dutybound:8081", '
                f'got "{url}" ({reason})',
            )

    def test_backend_port_out_of_range_is_an_error(self) -> None:
        problems = self.problems(
            make_document({"dutybound": make_agent(backend="http://x:70000")})
        )
        self.assertEqual(len(problems), 1)
        self.assertIn("agents.dutybound.backend: expected a URL", problems[0])


class HealthAndIdleTests(ConfigTestCase):
    def test_health_path_must_start_with_a_slash(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(health={"path": "health"})}),
            'agents.dutybound.health.path: expected a path starting with "/", got "health"',
        )

    def test_failures_must_be_at_least_one(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(health={"failures": 0})}),
            "agents.dutybound.health.failures: expected a positive integer, got 0",
        )

    def test_ignore_paths_must_start_with_a_slash(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(idle={"ignore_paths": ["/ok", "status/*"]})}),
            'agents.dutybound.idle.ignore_paths[1]: expected a path starting with "/", '
            'got "status/*"',
        )

    def test_ignore_user_agents_must_be_strings(self) -> None:
        self.assertProblem(
            make_document({"dutybound": make_agent(idle={"ignore_user_agents": [42]})}),
            "agents.dutybound.idle.ignore_user_agents[0]: expected a non-empty string, got 42",
        )


class SectionTests(ConfigTestCase):
    """
    The listen, docker, proxy and events sections.
    """

    def test_listen_endpoint_must_parse(self) -> None:
        self.assertProblem(
            make_document(listen={"proxy": "tpc:8080"}),
            'listen.proxy: expected a Twisted endpoint like "tcp:8080", got "tpc:8080" '
            "(Unknown endpoint type: 'tpc')",
        )

    def test_listen_endpoint_with_options(self) -> None:
        document = make_document(listen={"admin": "tcp:9191:interface=0.0.0.0"})
        self.assertEqual(parse(document).listen.admin, "tcp:9191:interface=0.0.0.0")

    def test_listen_endpoint_with_an_escaped_ipv6_interface(self) -> None:
        text = "listen: {admin: 'tcp:9191:interface=\\:\\:1'}\nagents: {}\n"
        self.assertEqual(parse_config(text, SOURCE).listen.admin, r"tcp:9191:interface=\:\:1")

    def test_docker_url_needs_a_known_scheme(self) -> None:
        self.assertProblem(
            make_document(docker={"url": "/var/run/docker.sock"}),
            'docker.url: expected a Docker URL like "unix:///var/run/docker.sock" or '
            '"tcp://manager:2376", got "/var/run/docker.sock"',
        )

    def test_trusted_proxies_are_networks_with_host_bits_allowed(self) -> None:
        config = parse(make_document(proxy={"trusted_proxies": ["10.1.2.3/8", "::1"]}))
        self.assertEqual(
            config.proxy.trusted_proxies,
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )

    def test_the_front_doors_limits_are_read(self) -> None:
        proxy = parse(make_document(proxy={
            "body_timeout": "45s", "send_timeout": "1m", "max_buffered_bytes": "16KiB",
            "max_connections": 10000, "max_connections_per_client": 64,
            "max_backend_connections": 32})).proxy
        self.assertEqual(
            (proxy.body_timeout, proxy.send_timeout, proxy.max_buffered_bytes,
             proxy.max_connections, proxy.max_connections_per_client,
             proxy.max_backend_connections),
            (45.0, 60.0, 16384, 10000, 64, 32))

    def test_the_front_doors_limits_are_refused_with_their_key_paths(self) -> None:
        for key, value, message in [
            ("body_timeout", "0s", 'expected a duration greater than 0, got "0s"'),
            ("send_timeout", "soon", 'expected a duration like "15m", got "soon"'),
            ("max_buffered_bytes", "1KiB", 'expected at least 4096 bytes ("4KiB"), got "1KiB"'),
            ("max_connections", 0, "expected a positive integer, got 0"),
            ("max_connections_per_client", -1, "expected a positive integer, got -1"),
            ("max_backend_connections", "many", 'expected a positive integer, got "many"'),
        ]:
            self.assertProblem(make_document(proxy={key: value}), f"proxy.{key}: {message}")

    def test_max_header_bytes_accepts_sizes(self) -> None:
        sizes = [
            parse(make_document(proxy={"max_header_bytes": size})).proxy.max_header_bytes
            for size in (8192, "16KiB", "1MiB", "512 B")
        ]
        self.assertEqual(sizes, [8192, 16384, 1048576, 512])

    def test_max_header_bytes_must_be_positive(self) -> None:
        self.assertProblem(
            make_document(proxy={"max_header_bytes": "0KiB"}),
            'proxy.max_header_bytes: expected a size in bytes like 16384 or "16KiB", got "0KiB"',
        )

    def test_retry_after_must_be_a_positive_integer(self) -> None:
        self.assertProblem(
            make_document(proxy={"retry_after": 1.5}),
            "proxy.retry_after: expected a positive integer, got 1.5",
        )

    def test_events_log_file_may_be_null(self) -> None:
        self.assertIsNone(parse(make_document(events={"log_file": None})).events.log_file)


class EventsConsumersTests(ConfigTestCase):
    """
    events.consumers: webhook and Slack consumers, their URL (or the file holding it),
    their event patterns and their limits.
    """

    def test_no_consumers_by_default(self):
        self.assertEqual(parse(make_document()).events.consumers, ())

    def test_webhook_with_every_setting(self):
        [consumer] = self.consumers({
            "type": "webhook", "url": "https://hooks.example.com/orchestrator",
            "events": ["agent.degraded", "restart.exhausted", "agent.*"],
            "timeout": "2s", "retries": 0, "backoff": "500ms", "queue_size": 50,
        })
        self.assertEqual(consumer, ConsumerConfig(
            ConsumerType.WEBHOOK, "https://hooks.example.com/orchestrator",
            events=("agent.degraded", "restart.exhausted", "agent.*"),
            timeout=2.0, retries=0, backoff=0.5, queue_size=50))

    def test_defaults(self):
        [consumer] = self.consumers({"type": "slack", "url": "https://hooks.slack.com/x"})
        self.assertEqual((consumer.events, consumer.timeout, consumer.retries,
                          consumer.backoff, consumer.queue_size, consumer.blocks),
                         (("*",), 5.0, 5, 1.0, 1000, False))

    def test_the_url_never_shows_in_a_repr(self):
        [consumer] = self.consumers({"type": "webhook", "url": "https://h.example/secret"})
        self.assertNotIn("secret", repr(consumer))

    def test_url_or_url_file_is_required_but_not_both(self):
        path = self.secret("https://h.example/x")
        problems = self.problems(make_document(events={"consumers": [
            {"type": "webhook"},
            {"type": "webhook", "url": "https://h.example/x", "url_file": path}]}))
        self.assertEqual(problems, [
            f"{SOURCE}: events.consumers[0].url: expected either url or url_file (a file "
            "holding the URL, such as a Docker secret)",
            f"{SOURCE}: events.consumers[1].url: expected either url or url_file, not both"])

    def test_every_problem_is_reported_at_once(self):
        problems = self.problems(make_document(events={"consumers": [{
            "type": "teams", "url": "ftp://h.example/x", "events": ["agent.degarded"],
            "timeout": 0, "retries": -1, "queue_size": 0, "blocks": True, "colour": "red"}]}))
        self.assertEqual([problem.split(": ", 2)[1] for problem in problems], [
            "events.consumers[0].type", "events.consumers[0].url",
            "events.consumers[0].events[0]", "events.consumers[0].timeout",
            "events.consumers[0].retries", "events.consumers[0].queue_size",
            "events.consumers[0].colour", "events.consumers[0].blocks"])
        self.assertIn('"agent.degarded" matches no event type (did you mean '
                      '"agent.degraded"?)', problems[2])

    def test_event_pattern_matching_nothing_lists_the_known_types(self):
        [problem] = self.problems(make_document(events={"consumers": [
            {"type": "webhook", "url": "https://h.example/x", "events": ["zzz.*"]}]}))
        self.assertIn("known: agent.reconciled, agent.wake", problem)

    def test_blocks_are_for_slack_only(self):
        [problem] = self.problems(make_document(events={"consumers": [
            {"type": "webhook", "url": "https://h.example/x", "blocks": True}]}))
        self.assertIn("events.consumers[0].blocks: only a slack consumer sends blocks", problem)


class ColdStartConfigTests(ConfigTestCase):
    def test_hold_mode_and_limits(self):
        config = parse(make_document({"a": make_agent(
            cold_start={"mode": "hold", "hold_timeout": "45s", "max_held": 5})}))
        cold_start = config.agents[0].cold_start
        self.assertEqual((cold_start.mode.value, cold_start.hold_timeout, cold_start.max_held),
                         ("hold", 45.0, 5))

    def test_unknown_mode_names_the_choices(self):
        problems = self.problems(make_document({"a": make_agent(cold_start={"mode": "wait"})}))
        self.assertIn('agents.a.cold_start.mode: expected "reject" or "hold", got "wait"',
                      problems[0])


class BackendHostTests(ConfigTestCase):
    def test_stack_prefixed_service_name_is_refused_with_a_hint(self):
        problems = self.problems(make_document(
            {"a": make_agent(backend="http://tasks.orchestrator_demo:8081")}))
        self.assertEqual(len(problems), 1)
        self.assertIn('agents.a.backend:', problems[0])
        self.assertIn('"tasks.demo" rather than "tasks.mystack_demo"', problems[0])


class AgentApiConfigTests(ConfigTestCase):
    """
    The agents' API: its listener, its state file and limits, and per agent what it may
    do and how it is known.
    """

    def test_defaults_no_listener_no_state_both_identities_and_an_hour_of_lease(self):
        config = parse(make_document())
        self.assertIsNone(config.listen.agents)
        self.assertEqual(config.agent_api, AgentApiConfig())
        self.assertIsNone(config.agent_api.state_file)
        agent = config.agents[0]
        self.assertIsNone(agent.token)
        self.assertEqual(agent.registration,
                         RegistrationConfig(identity=("token", "address"), backends=(),
                                            max_routes=20, max_leases=10))
        self.assertEqual(agent.idle.max_lease, 3600.0)

    def test_everything_set(self):
        token = self.secret("an-agent-token-of-24-chars\n")
        state = os.path.abspath(os.path.join(self.mktemp(), "state.json"))
        config = parse(make_document(
            listen={"agents": "tcp:8090"},
            agent_api={"state_file": state, "max_body_bytes": "8KiB", "requests_per_minute": 30},
            agents={"dutybound": make_agent(
                token_file=token, idle={"max_lease": "2h"},
                registration={"identity": ["token"], "backends": ["tasks.preview-*"],
                              "max_routes": 5, "max_leases": 2})},
        ))
        self.assertEqual(config.listen.agents, "tcp:8090")
        self.assertEqual(config.agent_api, AgentApiConfig(state_file=state, max_body_bytes=8192,
                                                          requests_per_minute=30))
        agent = config.agents[0]
        self.assertEqual(agent.token, "an-agent-token-of-24-chars")
        self.assertNotIn("an-agent-token", repr(config))
        self.assertEqual(agent.registration, RegistrationConfig(
            identity=("token",), backends=("tasks.preview-*",), max_routes=5, max_leases=2))
        self.assertEqual(agent.idle.max_lease, 7200.0)

    def test_an_unknown_identity_is_refused_naming_the_known_ones(self):
        self.assertProblem(
            make_document(agents={"dutybound": make_agent(
                registration={"identity": ["token", "password"]})}),
            'agents.dutybound.registration.identity: expected one or both of "token" and '
            '"address", got a list')

    def test_a_short_agent_token_is_refused(self):
        problems = self.problems(make_document(agents={"dutybound": make_agent(
            token_file=self.secret("short"))}))
        self.assertEqual(len(problems), 1)
        self.assertIn("agents.dutybound.token_file:", problems[0])
        self.assertIn("at least 16 characters", problems[0])

    def test_a_bad_agents_listener_is_refused(self):
        problems = self.problems(make_document(listen={"agents": "tcp:notaport"}))
        self.assertIn("listen.agents:", problems[0])


class LimitsTests(ConfigTestCase):
    """
    The host's budget: counts, sizes and shares of the node, protections, the queue.
    """

    def test_by_default_there_is_no_budget(self):
        limits = parse(make_document()).limits
        self.assertEqual(limits, LimitsConfig())
        self.assertFalse(limits.limited)
        self.assertEqual(limits.default_memory, 256 * 1024 * 1024)
        self.assertIsNone(parse(make_document()).agents[0].memory)

    def test_everything_set(self):
        config = parse(make_document(
            limits={"max_awake": 3, "memory": "6GiB", "default_memory": "128MiB",
                    "min_idle": "30s", "min_awake": "2m", "max_queued": 10,
                    "queue_timeout": "5m", "min_available": "1GiB"},
            agents={"dutybound": make_agent(memory="512MiB")}))
        self.assertEqual(config.limits, LimitsConfig(
            max_awake=3, memory=6 * 1024 ** 3, default_memory=128 * 1024 ** 2, min_idle=30,
            min_awake=120, max_queued=10, queue_timeout=300, min_available=1024 ** 3))
        self.assertTrue(config.limits.limited)
        self.assertEqual(config.agents[0].memory, 512 * 1024 ** 2)

    def test_memory_may_be_a_share_of_the_node(self):
        limits = parse(make_document(limits={"memory": "75%"})).limits
        self.assertEqual(limits.memory, NodeShare(0.75))

    def test_null_is_no_limit(self):
        limits = parse(make_document(limits={"max_awake": None, "memory": None})).limits
        self.assertEqual(limits, LimitsConfig())

    def test_each_problem_is_reported_at_its_key(self):
        self.assertEqual(self.problems(make_document(limits={
            "memory": "lots", "max_awake": 0, "min_idle": "soon", "max_awak": 1})), [
            f'{SOURCE}: limits.memory: expected a size like "8GiB" or a share of the '
            f'node\'s memory like "75%", got "lots"',
            f"{SOURCE}: limits.max_awake: expected a positive integer, got 0",
            f'{SOURCE}: limits.min_idle: expected a duration like "15m", got "soon"',
            f'{SOURCE}: limits.max_awak: unknown key, did you mean "max_awake"?',
        ])

    def test_a_share_above_all_of_it_is_refused(self):
        self.assertProblem(make_document(limits={"memory": "150%"}),
                           'limits.memory: expected a share like "75%" (above 0%, at most '
                           '100%), got "150%"')

    def test_an_agents_memory_is_a_size(self):
        self.assertProblem(make_document(agents={"dutybound": make_agent(memory="half")}),
                           'agents.dutybound.memory: expected a size in bytes like 16384 or '
                           '"16KiB", got "half"')


class ReplicasTests(ConfigTestCase):
    """
    C{replicas}: the tasks an on-demand agent's wake asks for.
    """

    def test_an_agent_asks_for_one_replica_by_default(self):
        self.assertEqual(parse(make_document()).agents[0].replicas, 1)

    def test_an_on_demand_agent_may_ask_for_several(self):
        config = parse(make_document(agents={"dutybound": make_agent(replicas=3)}))
        self.assertEqual(config.agents[0].replicas, 3)

    def test_replicas_are_a_positive_whole_number(self):
        for bad in (0, -1, "two", 1.5):
            problems = self.problems(make_document(agents={"dutybound": make_agent(
                replicas=bad)}))
            self.assertEqual(len(problems), 1, problems)
            self.assertTrue(problems[0].startswith(f"{SOURCE}: agents.dutybound.replicas: "
                                                   "expected"), problems)

    def test_an_always_on_agent_may_not_set_replicas(self):
        self.assertProblem(
            make_document(agents={"dutybound": make_agent(policy="always_on", replicas=2)}),
            "agents.dutybound.replicas: an always-on agent runs the replicas its service "
            "asks for (Swarm's to keep; docker service scale), the orchestrator never "
            "scales it: leave replicas out")
