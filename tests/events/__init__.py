"""
Tests of orchestrator.events.
"""
