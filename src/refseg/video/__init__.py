"""Video: ground a phrase, follow its objects through the frames, and measure it.

One module per stage, data flowing one way: :mod:`~refseg.video.frames` decodes (streamed),
:mod:`~refseg.video.tracker` carries masks from frame to frame (:mod:`~refseg.video.memory`: SAM 2 /
SAM 3 video models with their own memory), :mod:`~refseg.video.matching`
keeps IDs across re-grounding, :mod:`~refseg.video.run` is the per-frame loop and its resumable
records, :mod:`~refseg.video.overlay` draws the result video; :mod:`~refseg.video.metrics` (J&F),
:mod:`~refseg.video.sequences` (synthetic sequences with exact ground truth) and
:mod:`~refseg.video.datasets` (Ref-YouTube-VOS, Ref-DAVIS, MeViS readers) measure it.
"""

from __future__ import annotations

from refseg.video.frames import FrameSource, is_video, open_frames
from refseg.video.memory import MemoryTracker, load_tracker
from refseg.video.run import FrameResult, TrackOptions, track
from refseg.video.tracker import PromptTracker, Tracker

__all__ = [
    "FrameResult",
    "FrameSource",
    "MemoryTracker",
    "PromptTracker",
    "TrackOptions",
    "Tracker",
    "is_video",
    "load_tracker",
    "open_frames",
    "track",
]
