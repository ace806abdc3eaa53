"""Our KeyFace schedule matches the reference's steady-state bookkeeping (pipeline_schedule.json)."""

from __future__ import annotations

import json

import pytest
import torch

from engine.emotion import Emotion, emotion_track
from engine.errors import InputError
from engine.pipeline.plan import KeyFacePlan

from .conftest import KEYFACE

RUNS = json.loads((KEYFACE / "pipeline_schedule.json").read_text())["runs"]


@pytest.mark.parametrize("run", RUNS, ids=lambda r: f"N{r['N_audio_frames']}")
def test_steady_state_matches_reference(run):
    plan = KeyFacePlan(run["N_audio_frames"])
    reference_calls = [
        b for chunk in run["sample_loop_chunks"] for b in chunk["keyframe_call"]["audio_frame_index_per_slot"]
    ]
    ours = [plan.batch_slot_frames(b) for b in plan.keyframe_batches()]
    assert len(ours) == len(reference_calls)
    full = [i for i, b in enumerate(plan.keyframe_batches()) if len(b) == plan.keyframes_per_batch]
    for i in full:
        assert ours[i] == reference_calls[i]
    # Pairs of every outer chunk but the last (the reference's tail has known quirks, spec §14.4).
    steady = [p for chunk in run["sample_loop_chunks"][:-1] for p in chunk["interp_call"]["pairs"]]
    frames = plan.keyframe_frames
    assert steady == [[frames[j], frames[j + 1]] for j in range(len(steady))]
    for j, pair in enumerate(steady):
        assert plan.segment_frames(j) == list(range(pair[0], pair[1] + 1))


@pytest.mark.parametrize("n", [1, 2, 13, 14, 15, 27, 40, 169, 170, 1125])
def test_segments_cover_every_frame(n):
    plan = KeyFacePlan(n)
    assert plan.covered_frames >= n
    assert plan.covered_frames - plan.spacing < max(n, 2)  # no superfluous segment
    assert plan.keyframe_frames[-1] >= n - 1
    assert sum(len(b) for b in plan.keyframe_batches()) == plan.num_keyframes


def test_emotion_track_ramps_and_presets():
    track = emotion_track([Emotion.preset("neutral"), Emotion.preset("happy")], 11)
    assert track.shape == (11, 2)
    torch.testing.assert_close(track[0], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(track[-1], torch.tensor([0.85, 0.75]))
    torch.testing.assert_close(track[5], torch.tensor([0.425, 0.375]))
    assert (track[1:, 0] >= track[:-1, 0]).all()
    three = emotion_track([Emotion.preset(n) for n in ("happy", "sad", "calm")], 101)
    torch.testing.assert_close(three[50], torch.tensor([-0.85, -0.35]))
    with pytest.raises(InputError, match="unknown emotion 'elated'"):
        Emotion.preset("elated")
    with pytest.raises(InputError, match="valence must be within"):
        Emotion(1.5, 0)
    assert Emotion(0.8, -0.9).accentuated() == Emotion(1.0, -1.0)
