"""
The agents: each agent's runtime, its health probes, the connections it drains when it
sleeps, the host table, and the one registry of all agents.
"""
