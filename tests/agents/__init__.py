"""
Tests of orchestrator.agents.
"""
