"""Moved to setmail.vectors.samples (``setmail vectors`` uses the same values); alias kept for tests."""
import sys

from setmail.vectors import samples

sys.modules[__name__] = samples
