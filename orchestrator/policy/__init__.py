"""
The decisions, as pure functions of (now, observed values, config) returning what to do:
admission of a request, a wake's progress, idleness, reactions to what Swarm shows.
"""
