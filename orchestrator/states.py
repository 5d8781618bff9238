"""
The one set of agent states and the one table of transitions between them.

Every policy, the proxy, ``/api/health`` and the logs use L{AgentState}; the JSON edge
renders it with C{state.value}. Each allowed transition names the event it emits, so a
transition and its event can never disagree.
"""

from __future__ import annotations

from enum import Enum


class AgentState(Enum):
    """
    What an agent is doing, as clients and operators see it.
    """

    #: Scaled to 0 replicas (on-demand only). Not an error: the next request wakes it.
    SLEEPING = "sleeping"
    #: A wake is under way: scaled up, waiting for a task to run and answer its probe.
    STARTING = "starting"
    #: A task runs and answered a health probe through the proxy's own backend address.
    READY = "ready"
    #: Something is wrong (wake failed, health failing, service missing); see the reason.
    DEGRADED = "degraded"


S, ST, R, D = AgentState.SLEEPING, AgentState.STARTING, AgentState.READY, AgentState.DEGRADED

#: (from, to) -> the event type emitted when an agent makes that transition.
TRANSITIONS: dict[tuple[AgentState, AgentState], str] = {
    (S, ST): "agent.wake",
    (D, ST): "agent.wake",
    (ST, R): "agent.ready",
    (D, R): "agent.recovered",
    (R, S): "agent.sleep",
    (D, S): "agent.sleep",
    (ST, D): "agent.degraded",
    (R, D): "agent.degraded",
    (S, D): "agent.degraded",
}


class InvalidTransition(Exception):
    """
    An agent was asked to move between two states the table does not connect.
    """

    def __init__(self, agent: str, old: AgentState, new: AgentState) -> None:
        super().__init__(f"agent {agent!r}: no transition from {old.value} to {new.value}")
        self.agent = agent
        self.old = old
        self.new = new


def transition_event(agent: str, old: AgentState, new: AgentState) -> str:
    """
    Return the event type for moving C{agent} from C{old} to C{new}.

    @raise InvalidTransition: if the table does not allow it.
    """
    try:
        return TRANSITIONS[(old, new)]
    except KeyError:
        raise InvalidTransition(agent, old, new) from None
