"""
Tests for L{orchestrator.config.diff}: what a reload changes, as a value.
"""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.diff import (
    RESTART_SECTIONS,
    AgentChange,
    ConfigDiff,
    diff,
    running_config,
)
from orchestrator.config.model import (
    AdminConfig,
    Config,
    DockerConfig,
    EventsConfig,
    IdleConfig,
    LimitsConfig,
    ListenConfig,
    Policy,
    ProxyConfig,
    ShutdownConfig,
)
from tests.helpers import agent_config


def config(*agents, **sections) -> Config:
    return Config(source="orchestrator.yaml", agents=agents, **sections)


ALPHA, BETA, GAMMA = agent_config("alpha"), agent_config("beta"), agent_config("gamma")


class DiffTests(SynchronousTestCase):
    def test_the_same_configuration_changes_nothing(self) -> None:
        self.assertTrue(diff(config(ALPHA, BETA), config(ALPHA, BETA)).empty)

    def test_the_file_it_came_from_is_no_change(self) -> None:
        self.assertTrue(diff(config(ALPHA), attrs.evolve(config(ALPHA), source="other")).empty)

    def test_added_agents_come_with_their_configuration_by_name(self) -> None:
        changes = diff(config(ALPHA), config(GAMMA, ALPHA, BETA))
        self.assertEqual((changes.added, changes.added_names),
                         ((BETA, GAMMA), ("beta", "gamma")))

    def test_removed_agents_are_named(self) -> None:
        self.assertEqual(diff(config(GAMMA, ALPHA, BETA), config(BETA)).removed,
                         ("alpha", "gamma"))

    def test_a_changed_agent_comes_with_its_old_and_new_configuration(self) -> None:
        new = attrs.evolve(ALPHA, idle=IdleConfig(timeout=60))
        self.assertEqual(diff(config(ALPHA, BETA), config(new, BETA)).changed,
                         (AgentChange(ALPHA, new),))

    def test_a_change_of_settings_is_made_in_place(self) -> None:
        change = AgentChange(ALPHA, attrs.evolve(ALPHA, hosts=("new.example.com",),
                                                 startup_timeout=5))
        self.assertFalse(change.needs_new_runtime)

    def test_a_new_service_or_policy_needs_a_new_runtime(self) -> None:
        for changes in ({"service": "stack_alpha"}, {"policy": Policy.ALWAYS_ON}):
            self.assertTrue(AgentChange(ALPHA, attrs.evolve(ALPHA, **changes)).needs_new_runtime)

    def test_a_change_is_of_one_agent(self) -> None:
        self.assertRaises(ValueError, AgentChange, ALPHA, BETA)

    def test_a_host_moving_between_agents_changes_both(self) -> None:
        old = config(agent_config("alpha", hosts=("a.example.com",)),
                     agent_config("beta", hosts=("b.example.com",)))
        new = config(agent_config("alpha", hosts=("b.example.com",)),
                     agent_config("beta", hosts=("a.example.com",)))
        self.assertEqual(diff(old, new).changed_names, ("alpha", "beta"))

    def test_listen_docker_and_events_wait_for_a_restart(self) -> None:
        new = config(ALPHA, listen=ListenConfig(proxy="tcp:8081"),
                     events=EventsConfig(log_file="/var/log/events.jsonl"))
        self.assertEqual(diff(config(ALPHA), new).restart_needed, ("listen", "events"))

    def test_proxy_admin_token_and_shutdown_changes_are_reported(self) -> None:
        changes = diff(config(), config(proxy=ProxyConfig(retry_after=5),
                                        admin=AdminConfig(token="0123456789abcdef"),
                                        shutdown=ShutdownConfig(drain_timeout=5)))
        self.assertEqual((changes.proxy_changed, changes.admin_token_changed,
                          changes.shutdown_changed, changes.restart_needed),
                         (True, True, True, ()))

    def test_a_changed_budget_is_reported_and_needs_no_restart(self) -> None:
        changes = diff(config(), config(limits=LimitsConfig(max_awake=3)))
        self.assertEqual((changes.limits_changed, changes.restart_needed), (True, ()))

    def test_the_running_configuration_keeps_the_sections_that_wait(self) -> None:
        old = config(ALPHA, docker=DockerConfig(url="unix:///a.sock"))
        new = config(BETA, docker=DockerConfig(url="unix:///b.sock"),
                     proxy=ProxyConfig(retry_after=5))
        self.assertEqual(running_config(old, new),
                         attrs.evolve(new, docker=old.docker, listen=old.listen,
                                      events=old.events))


names = ("alpha", "beta", "gamma", "delta")


@st.composite
def agents(draw, name: str):
    return agent_config(
        name,
        service=draw(st.sampled_from((name, f"stack_{name}"))),
        policy=draw(st.sampled_from(Policy)),
        # Hosts of their own: a configuration never has one claimed twice.
        hosts=draw(st.sampled_from(((f"{name}.example.com",),
                                    (f"{name}.example.com", f"*.{name}.example.com")))),
        idle=IdleConfig(timeout=draw(st.sampled_from((60, 900)))),
    )


@st.composite
def configs(draw) -> Config:
    chosen = draw(st.lists(st.sampled_from(names), unique=True))
    return Config(
        source="orchestrator.yaml",
        agents=tuple(draw(agents(name)) for name in chosen),
        listen=draw(st.sampled_from((ListenConfig(), ListenConfig(proxy="tcp:8081")))),
        docker=draw(st.sampled_from((DockerConfig(url="unix:///a.sock"),
                                     DockerConfig(url="unix:///a.sock", timeout=5)))),
        events=draw(st.sampled_from((EventsConfig(), EventsConfig(log_file="/tmp/e.jsonl")))),
        proxy=draw(st.sampled_from((ProxyConfig(), ProxyConfig(retry_after=5)))),
        admin=draw(st.sampled_from((AdminConfig(), AdminConfig(token="a" * 16),
                                    AdminConfig(token="b" * 16)))),
        shutdown=draw(st.sampled_from((ShutdownConfig(), ShutdownConfig(drain_timeout=0)))),
    )


def by_name(config: Config) -> dict:
    return {agent.name: agent for agent in config.agents}


class DiffPropertyTests(SynchronousTestCase):
    @given(configs())
    def test_a_configuration_against_itself_is_empty(self, old: Config) -> None:
        self.assertEqual(diff(old, old), ConfigDiff())

    @given(configs(), configs())
    def test_empty_exactly_when_the_configurations_are_equal(self, old, new) -> None:
        self.assertEqual(diff(old, new).empty, old == new)

    @given(configs(), configs())
    def test_added_removed_changed_and_unchanged_partition_the_names(self, old, new) -> None:
        changes = diff(old, new)
        unchanged = [name for name in by_name(old)
                     if by_name(new).get(name) == by_name(old)[name]]
        groups = [changes.added_names, changes.removed, changes.changed_names, unchanged]
        everyone = [name for group in groups for name in group]
        self.assertEqual(sorted(everyone), sorted(by_name(old).keys() | by_name(new).keys()))

    @given(configs(), configs())
    def test_applying_the_diff_to_the_old_agents_gives_the_new_ones(self, old, new) -> None:
        changes = diff(old, new)
        agents = by_name(old)
        for name in changes.removed:
            del agents[name]
        for change in changes.changed:
            self.assertEqual(agents[change.name], change.old)
            agents[change.name] = change.new
        for agent in changes.added:
            self.assertNotIn(agent.name, agents)
            agents[agent.name] = agent
        self.assertEqual(agents, by_name(new))

    @given(configs(), configs())
    def test_a_new_runtime_exactly_when_the_service_or_the_policy_changes(self, old,
                                                                          new) -> None:
        for change in diff(old, new).changed:
            self.assertEqual(change.needs_new_runtime,
                             change.old.service != change.new.service
                             or change.old.policy != change.new.policy)

    @given(configs(), configs())
    def test_the_reverse_diff_swaps_added_and_removed(self, old, new) -> None:
        forth, back = diff(old, new), diff(new, old)
        self.assertEqual((back.added_names, back.removed, back.restart_needed),
                         (forth.removed, forth.added_names, forth.restart_needed))
        self.assertEqual(back.changed, tuple(AgentChange(c.new, c.old) for c in forth.changed))

    @given(configs(), configs())
    def test_sections_are_reported_exactly_when_they_differ(self, old, new) -> None:
        changes = diff(old, new)
        self.assertEqual(
            (changes.restart_needed, changes.proxy_changed, changes.admin_token_changed,
             changes.shutdown_changed),
            (tuple(s for s in RESTART_SECTIONS if getattr(old, s) != getattr(new, s)),
             old.proxy != new.proxy, old.admin != new.admin, old.shutdown != new.shutdown))

    @given(configs(), configs())
    def test_once_applied_only_the_restart_remains(self, old, new) -> None:
        running = running_config(old, new)
        self.assertEqual(diff(old, running).restart_needed, ())
        self.assertEqual(attrs.evolve(diff(running, new), restart_needed=()), ConfigDiff())
