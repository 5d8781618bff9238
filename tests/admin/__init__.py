"""
Tests of orchestrator.admin.
"""
