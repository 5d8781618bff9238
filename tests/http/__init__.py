"""
Tests of orchestrator.http.
"""
