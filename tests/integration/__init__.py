"""
Tests and test support that need a real Docker engine in Swarm mode (see C{engine}).
"""
