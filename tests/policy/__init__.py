"""
Tests of orchestrator.policy.
"""
