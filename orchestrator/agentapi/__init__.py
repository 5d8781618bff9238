"""
The agents' API: a listener of its own, reachable from the agents' overlay network only,
through which each agent (and only it) registers hosts and takes busy leases.
"""
