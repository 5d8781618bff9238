"""
Tests of orchestrator.proxy.
"""
