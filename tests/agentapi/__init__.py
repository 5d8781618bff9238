"""
Tests of orchestrator.agentapi.
"""
