"""
Tests of orchestrator.relay.
"""
