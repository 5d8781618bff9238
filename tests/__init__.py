"""
Tests for orchestrator.

Hypothesis runs with a fixed profile (derandomized, bounded examples, no deadline) so a red
CI run is always reproducible; set HYPOTHESIS_PROFILE to use another registered profile.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
