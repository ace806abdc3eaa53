"""Smoke tests of the demo-model trainers, distillation and metrics (a few steps on tiny clips)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.audio.logmel import LogMelEncoder
from engine.defaults import DEMO_MODEL_DIR
from engine.models.stage import KeyFaceStage
from engine.models.vae import AutoencoderKL
from export.data.speech import espeak_missing_reason
from export.distill import DistillConfig, distill_step_fn, make_student, teacher_trajectories
from export.train.config import demo_stage, demo_vae
from export.train.dataset import N_MELS, SessionSet
from export.train.diffusion import LatentSet, diffusion_loss, sample_batch, stage_step_fn
from export.train.loop import LoopConfig, train
from export.train.synth import make_session
from export.train.vae import calibrate_scale, encode_frames, vae_step_fn

pytestmark = pytest.mark.skipif(espeak_missing_reason() is not None, reason="espeak-ng is not available")


@pytest.fixture(scope="module")
def sessions() -> SessionSet:
    enc = LogMelEncoder(N_MELS)
    parts = [make_session(k, "train", 64, utterances=1) for k in range(2)]
    starts = np.cumsum([0] + [s.num_frames for s in parts])
    feats = [enc.encode(torch.from_numpy(s.audio)).numpy()[: s.num_frames] for s in parts]
    return SessionSet(
        frames=np.concatenate([s.frames for s in parts]),
        audio_feats=np.concatenate(feats),
        params=np.concatenate([s.params for s in parts]),
        emotion=np.concatenate([s.emotion for s in parts]),
        starts=starts,
        neutral=np.stack([s.neutral for s in parts]),
        identity_seeds=np.arange(2),
        audio=np.concatenate([s.audio for s in parts]),
    )


@pytest.fixture(scope="module")
def latents(sessions: SessionSet) -> tuple[AutoencoderKL, LatentSet]:
    torch.manual_seed(0)
    vae = AutoencoderKL(demo_vae()).eval()
    raw = encode_frames(vae, sessions.frames)
    vae = calibrate_scale(vae, raw)
    lat = LatentSet(sessions, vae.scale_latent(raw), vae.scale_latent(encode_frames(vae, sessions.neutral)))
    return vae, lat


def fixed(step_fn):
    """The same batch and noise at every step."""
    return lambda i, gen: step_fn(0, torch.Generator().manual_seed(1))


def test_vae_loss_decreases_on_a_fixed_batch(sessions: SessionSet) -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL(demo_vae())
    losses = train(vae, fixed(vae_step_fn(vae, sessions, 4, crop=16)), LoopConfig(steps=20, lr=2e-3, warmup=1))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


@pytest.mark.parametrize("kind", ["keyframe", "interpolation"])
def test_stage_loss_decreases_on_a_fixed_batch(kind: str, latents) -> None:
    vae, lat = latents
    torch.manual_seed(0)
    stage = KeyFaceStage(demo_stage(kind))  # type: ignore[arg-type]
    step = stage_step_fn(stage, lat, 1, vae if kind == "keyframe" else None)
    losses = train(stage, fixed(step), LoopConfig(steps=20, lr=2e-3, warmup=1))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_resume_continues_identically(latents, tmp_path: Path) -> None:
    _, lat = latents

    def fresh() -> KeyFaceStage:
        torch.manual_seed(0)
        return KeyFaceStage(demo_stage("interpolation"))

    straight = fresh()
    train(straight, stage_step_fn(straight, lat, 1, None), LoopConfig(steps=4, seed=3))
    resumed = fresh()
    ckpt = tmp_path / "ckpt.pt"
    train(resumed, stage_step_fn(resumed, lat, 1, None), LoopConfig(steps=2, seed=3, checkpoint_every=2), ckpt)
    again = fresh()
    train(again, stage_step_fn(again, lat, 1, None), LoopConfig(steps=4, seed=3), ckpt)
    for a, b in zip(straight.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weight_average_ramps_then_tracks() -> None:
    from export.train.loop import WeightAverage

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: decay min(0.99, 1/10) = 0.1
    torch.testing.assert_close(ema.state["weight"], torch.full((1, 2), 0.9))
    for _ in range(2000):
        ema.update(model)
    torch.testing.assert_close(ema.state["weight"], torch.ones(1, 2))


def test_moving_average_is_checkpointed_resumed_and_loaded(latents, tmp_path: Path) -> None:
    from export.train.run import load_stage

    _, lat = latents

    def run(steps: int, ckpt: Path, every: int) -> None:
        torch.manual_seed(0)
        stage = KeyFaceStage(demo_stage("interpolation"))
        cfg = LoopConfig(steps=steps, seed=3, checkpoint_every=every, ema_decay=0.5)
        train(stage, stage_step_fn(stage, lat, 1, None), cfg, ckpt)

    run(4, tmp_path / "straight.pt", 4)
    run(2, tmp_path / "resumed.pt", 2)
    run(4, tmp_path / "resumed.pt", 2)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert straight["ema_updates"] == resumed["ema_updates"] == 4
    for k, v in straight["ema"].items():
        torch.testing.assert_close(v, resumed["ema"][k], rtol=0, atol=0)
    name = next(k for k, v in straight["model"].items() if v.is_floating_point() and v.numel() > 1)
    assert not torch.equal(straight["ema"][name], straight["model"][name])
    averaged = load_stage(tmp_path / "straight.pt", "interpolation").state_dict()[name]
    raw = load_stage(tmp_path / "straight.pt", "interpolation", average=False).state_dict()[name]
    torch.testing.assert_close(averaged, straight["ema"][name], rtol=0, atol=0)
    torch.testing.assert_close(raw, straight["model"][name], rtol=0, atol=0)


def test_mouth_cells_weight_the_loss(latents) -> None:
    _, lat = latents
    mouth = lat.mouth
    assert mouth.shape == (2, 1, 16, 16)
    assert 8 <= float(mouth[0].sum()) <= 48 and float(mouth[:, :, :8].sum()) == 0  # a box in the lower half
    stage = KeyFaceStage(demo_stage("interpolation")).eval()  # type: ignore[arg-type]
    batch = sample_batch("interpolation", lat, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        weighted, _ = diffusion_loss(stage, batch, torch.Generator().manual_seed(1))
        plain, _ = diffusion_loss(stage, dataclasses.replace(batch, mouth=None), torch.Generator().manual_seed(1))
    assert float(weighted) > float(plain)


@pytest.mark.parametrize("data_weight", [0.0, 0.5])
def test_distillation_step_runs(latents, data_weight: float) -> None:
    _, lat = latents
    torch.manual_seed(0)
    teacher = KeyFaceStage(demo_stage("keyframe")).eval().requires_grad_(False)
    cfg = DistillConfig(teacher_steps=2, student_steps=3, data_weight=data_weight)
    traj = teacher_trajectories(teacher, lat, cfg, batches=1, clips=1)
    student = make_student(teacher)
    before = copy.deepcopy(student.state_dict())
    step = distill_step_fn(student, teacher, lat, traj, cfg, 1)
    _, logs = step(0, torch.Generator().manual_seed(0))
    assert ("data" in logs) == (data_weight > 0) and {"traj", "guidance"} <= set(logs)
    losses = train(student, step, LoopConfig(steps=2, warmup=1))
    assert all(np.isfinite(losses))
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_measured_opening_tracks_ground_truth(sessions: SessionSet) -> None:
    from export.eval import ground_truth_lip_sync

    assert ground_truth_lip_sync(sessions, [0, 1]) > 0.95


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "keyface.json").is_file(), reason="no demo model in this checkout")
def test_demo_model_renders_and_metrics_are_finite(sessions: SessionSet) -> None:
    from engine.bundle import load_bundle
    from export.eval import lip_sync, render

    bundle = load_bundle(DEMO_MODEL_DIR)
    assert bundle.identity_image is not None and bundle.identity_image.is_file()
    size = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir())
    assert size <= 30_000_000
    wave = sessions.audio[: 25 * 640]
    frames = render(bundle, sessions.neutral[0], wave, np.zeros((25, 2), np.float32))
    assert frames.shape == (25, 64, 64, 3)
    r, psnr = lip_sync(bundle, sessions.subset(1), [0])
    assert np.isfinite(r) and np.isfinite(psnr)


def test_train_cli_reports_missing_inputs_without_traceback(tmp_path: Path, capsys) -> None:
    from keyface.cli import main

    assert main(["train", "keyframe", "--out", str(tmp_path / "empty"), "--steps", "1"]) == 2
    assert "no latent cache" in capsys.readouterr().err
    assert main(["train", "vae", "--out", str(tmp_path), "--data", str(tmp_path / "none.npz"), "--steps", "1"]) == 2
    assert "no training data" in capsys.readouterr().err


def test_clip_sourced_sessions_are_aligned_and_hold_non_speech() -> None:
    from engine.errors import InputError
    from export.data.clip import clip_seed, generate_clip
    from export.eval import ground_truth_lip_sync
    from export.train.dataset import CLIP_SESSION, generate

    data = generate(2, "train", source="clips")
    n = len(data.frames)
    assert data.starts[-1] == n == len(data.params) == len(data.emotion) == len(data.audio_feats)
    assert len(data.audio) == 640 * n
    assert all(b - a >= 8 * 25 for a, b in (data.span(s) for s in range(2)))  # a keyframe window fits
    assert ground_truth_lip_sync(data, [0, 1]) > 0.9
    held = generate(1, "heldout", source="clips")
    assert not set(held.identity_seeds) & set(data.identity_seeds)
    plan = dataclasses.replace(CLIP_SESSION, render=False)
    kinds = {s.kind for k in range(6) for s in generate_clip(clip_seed(0, "train", k), "train", plan).segments}
    assert kinds & {"laugh", "sigh", "hum"}, kinds
    with pytest.raises(InputError):
        generate(1, source="podcasts")


def test_session_tracks_fit_their_audio() -> None:
    from export.data.visemes import fit_length

    track = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(fit_length(track, 2), track[:2])
    np.testing.assert_array_equal(fit_length(track, 5)[3:], np.repeat(track[-1:], 2, axis=0))
    s = make_session(637, "train")  # its viseme tracks came out 1 ms shorter than its audio
    assert len(s.params) == len(s.frames) == len(s.emotion) == len(s.audio) // 640


def test_distill_cli_refuses_bad_step_counts(tmp_path: Path, capsys) -> None:
    from keyface.cli import main

    assert main(["distill", "--out", str(tmp_path), "--interpolation-steps", "0"]) == 2
    assert "--interpolation-steps must be 1..10" in capsys.readouterr().err


def test_distill_cli_ships_a_student_with_its_step_count(sessions: SessionSet, tmp_path: Path) -> None:
    from engine.bundle import load_bundle
    from export.train.run import run_stage, run_vae
    from keyface.cli import main

    data = tmp_path / "train.npz"
    sessions.save(data)
    run_vae(data, tmp_path, steps=1, batch=2)
    for kind in ("keyframe", "interpolation"):
        run_stage(kind, tmp_path, steps=1, clips=1, pixel_every=0)
    ship = tmp_path / "ship"
    assert main(["distill", "--out", str(tmp_path), "--steps", "1", "--clips", "1", "--teacher-batches", "1",
                 "--stages", "interpolation", "--interpolation-steps", "2", "--threads", "1",
                 "--ship", str(ship)]) == 0
    assert (tmp_path / "student_interpolation.pt").is_file() and not (tmp_path / "student_keyframe.pt").exists()
    bundle = load_bundle(ship)
    assert (bundle.sampling.keyframe_steps, bundle.sampling.interpolation_steps) == (3, 2)
    assert bundle.sampling.keyframe_guidance == bundle.sampling.interpolation_guidance == "none"


def test_data_only_fine_tuning_needs_no_teacher_and_uses_the_student_levels(latents) -> None:
    from engine.sampling.denoiser import denoise
    from export.distill import _weighted_mse, level_input
    from export.train.diffusion import WINDOW, conditioning

    _, lat = latents
    torch.manual_seed(0)
    student = make_student(KeyFaceStage(demo_stage("interpolation")))
    cfg = DistillConfig(student_steps=1, data_weight=1.0, data_levels="student")
    step = distill_step_fn(student, None, lat, None, cfg, 1)
    _, logs = step(0, torch.Generator().manual_seed(5))
    # the same draw by hand: a 1-step student sees pure noise at sigma_max and must predict the clip
    gen = torch.Generator().manual_seed(5)
    batch = sample_batch("interpolation", lat, 1, gen)
    noise = torch.randn(batch.x0.shape, generator=gen)
    x = level_input(batch.x0, noise, 700.0, first=True)
    assert torch.allclose(x, noise * (1 + 700.0**2) ** 0.5)
    with torch.no_grad():
        pred = denoise(student.network, x, torch.full((x.shape[0],), 700.0), conditioning(student, batch), WINDOW)
    assert set(logs) == {"data"}
    assert logs["data"] == pytest.approx(float(_weighted_mse(pred, batch.x0, "interpolation", batch.mouth)), rel=1e-5)
    before = copy.deepcopy(student.state_dict())
    assert all(np.isfinite(train(student, step, LoopConfig(steps=2, warmup=1))))
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="data_weight"):
        distill_step_fn(student, None, lat, None, DistillConfig(data_weight=0.0), 1)
    with pytest.raises(ValueError, match="data_levels"):
        distill_step_fn(student, None, lat, None, DistillConfig(data_weight=1.0, data_levels="random"), 1)


def test_distill_cli_refuses_teacherless_runs_it_cannot_do(tmp_path: Path, capsys) -> None:
    from keyface.cli import main

    assert main(["distill", "--out", str(tmp_path), "--no-teacher"]) == 2
    assert "--no-teacher needs --init" in capsys.readouterr().err
    init = ["--init", str(DEMO_MODEL_DIR), "--no-teacher"]
    assert main(["distill", "--out", str(tmp_path), *init, "--data-weight", "0"]) == 2
    assert "--data-weight must be > 0" in capsys.readouterr().err
    assert main(["distill", "--out", str(tmp_path), *init, "--teacher-dir", str(tmp_path / "t")]) == 2
    assert "--teacher-dir" in capsys.readouterr().err


def test_shipped_model_fine_tunes_on_its_own_latents(sessions: SessionSet, tmp_path: Path) -> None:
    from engine.bundle import load_bundle
    from keyface.cli import main

    data = tmp_path / "train.npz"
    sessions.save(data)
    work = tmp_path / "ft"
    assert main(["train", "latents", "--data", str(data), "--weights", str(DEMO_MODEL_DIR), "--out", str(work)]) == 0
    demo = load_bundle(DEMO_MODEL_DIR)
    cache = torch.load(work / "latents.pt", weights_only=True)
    assert cache["latents"].shape == (len(sessions.frames), 4, 16, 16) and cache["sessions"] == 2
    with torch.no_grad():  # encoded by the demo VAE at its own scale, not recalibrated
        first = demo.vae.scale_latent(encode_frames(demo.vae, sessions.frames[:2]))
    assert torch.allclose(cache["latents"][:2], first, atol=1e-5)
    ship = tmp_path / "ship"
    assert main(["distill", "--out", str(work), "--init", str(DEMO_MODEL_DIR), "--no-teacher", "--stages",
                 "interpolation", "--steps", "2", "--clips", "1", "--data-weight", "1", "--data-levels", "student",
                 "--ema", "0.9", "--threads", "1", "--ship", str(ship)]) == 0
    tuned = load_bundle(ship)
    assert tuned.vae.scale_factor == demo.vae.scale_factor
    kf, new_kf = demo.keyframe.state_dict(), tuned.keyframe.state_dict()
    assert all(torch.equal(kf[k], new_kf[k]) for k in kf)  # not in --stages: the --init stage, unchanged
    ip, new_ip = demo.interpolation.state_dict(), tuned.interpolation.state_dict()
    assert any(not torch.equal(ip[k], new_ip[k]) for k in ip)
    assert "ema" in torch.load(work / "student_interpolation.pt", weights_only=True)


def test_data_generation_in_worker_processes_equals_one_process() -> None:
    from export.train.dataset import generate

    one = generate(3, "heldout", utterances=1)
    two = generate(3, "heldout", utterances=1, workers=2)
    assert list(one.starts) == list(two.starts) and len(one.identity_seeds) == 3
    for name in SessionSet.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    merged = SessionSet.concat([one.subset(1), two])  # session 0 twice, then sessions 1 and 2
    n0 = one.span(0)[1]
    assert merged.num_sessions == 4 and merged.span(1) == (n0, 2 * n0) and merged.span(3)[1] == n0 + len(two.frames)
    np.testing.assert_array_equal(merged.frames[n0 : 2 * n0], one.frames[:n0])


def test_decoder_fine_tuning_keeps_the_encoder_and_the_latents(latents, tmp_path: Path) -> None:
    from export.train.decoder import mouth_pixels
    from export.train.run import cache_latents, load_vae, run_decoder

    vae, lat = latents
    data = tmp_path / "train.npz"
    lat.data.save(data)
    shared = tmp_path / "shared"
    cache_latents(vae, lat.data, data, shared)
    for name in ("vae.json", "vae.safetensors", "latents.pt"):
        (tmp_path / name).symlink_to(shared / name)
    cells = mouth_pixels(lat, np.array([0, int(lat.data.starts[1])]))  # a frame of each session
    assert cells.shape == (2, 1, 64, 64) and float(cells[:, :, :32].sum()) == 0 < float(cells[1].sum())
    assert torch.equal(cells[1, 0, ::4, ::4], lat.mouth[1, 0])
    tuned = run_decoder(tmp_path, steps=3, batch=2, lr=1e-3, ema_decay=0.0)
    before, after = vae.state_dict(), load_vae(tmp_path).state_dict()
    assert not (tmp_path / "vae.safetensors").is_symlink()
    assert all(torch.equal(before[k], v) for k, v in load_vae(shared).state_dict().items())  # link target kept
    assert tuned.scale_factor == vae.scale_factor
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    cached = torch.load(tmp_path / "latents.pt", weights_only=True)["latents"]
    with torch.no_grad():
        again = tuned.scale_latent(encode_frames(tuned, lat.data.frames[:4]))
    assert torch.allclose(again, cached[:4], atol=1e-5)


def test_lip_sync_breakdown_separates_keyframes_offsets_and_gains() -> None:
    from export.eval import lip_sync_stats

    rng = np.random.default_rng(0)
    jaw = [rng.random(40), rng.random(27)]
    good = [j.copy() for j in jaw]
    good[0][1::13] = 1.0 - jaw[0][1::13]  # spoil frames between keyframes only
    stats = lip_sync_stats(good, jaw, spacing=13)
    assert stats.keyframes == pytest.approx(1.0) and stats.between < 0.99
    scaled = lip_sync_stats([2.0 * jaw[0] + 0.1, 0.5 * jaw[1] - 0.2], jaw)
    assert stats.offsets[1] == pytest.approx(0.0) and stats.gains[1] == pytest.approx(1.0)
    assert scaled.per_clip == pytest.approx([1.0, 1.0])  # each clip is a perfect linear map …
    assert scaled.r < 0.99  # … but the identity-dependent offset and gain lower the pooled r
    assert scaled.gains == pytest.approx([2.0, 0.5])
    assert scaled.offsets == pytest.approx([jaw[0].mean() + 0.1, -0.5 * jaw[1].mean() - 0.2])


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "keyface.json").is_file(), reason="no demo model in this checkout")
def test_eval_cli_measures_the_chosen_held_out_sessions(sessions: SessionSet, tmp_path: Path, capsys) -> None:
    import json

    from keyface.cli import main

    data = tmp_path / "heldout.npz"
    sessions.save(data)
    report = tmp_path / "report.json"
    assert main(["eval", "--data", str(data), "--first-clip", "1", "--clips", "1", "--no-emotion",
                 "--json", str(report), "--threads", "1"]) == 0
    rep = json.loads(report.read_text())
    assert rep["clips"] == [1] and len(rep["lip_sync_r_per_clip"]) == 1 == len(rep["mouth_gain_per_clip"])
    assert all(np.isfinite(rep[k]) for k in ("lip_sync_r", "lip_sync_r_keyframes", "lip_sync_r_between"))
    assert "held-out sessions 1-1" in capsys.readouterr().out
    assert main(["eval", "--data", str(data), "--first-clip", "2", "--no-emotion"]) == 2
    assert "no sessions to evaluate" in capsys.readouterr().err
