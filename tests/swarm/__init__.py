"""
Tests of orchestrator.swarm.
"""
