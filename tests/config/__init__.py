"""
Tests of orchestrator.config.
"""
