"""Moved to :mod:`refseg.paths` (outline geometry sits below every head that uses it); this name
stays so that code importing ``refseg.segmentation.paths`` keeps working: it *is* that module."""

import sys

from refseg import paths as _paths

sys.modules[__name__] = _paths
