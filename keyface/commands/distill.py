"""``keyface distill``: few-step, guidance-free students of the trained demo teacher; ship them."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from engine.errors import InputError

from .common import check_step_counts

EPILOG = """example (after keyface train …, see docs/demo-model.md):
  keyface distill --out out/train --steps 300 --ship models/demo --data-heldout out/data/heldout.npz"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill the demo teacher into a 1-3 step student and write the model folder",
        description="Guidance + step distillation of the demo model (export/distill.py).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="the training folder (teacher checkpoints, latents)")
    p.add_argument("--steps", type=int, default=300, help="student steps per stage (default 300)")
    p.add_argument("--clips", type=int, default=4, help="clips per step (default 4)")
    p.add_argument("--teacher-batches", type=int, default=8, help="teacher sample batches per stage (default 8)")
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    p.add_argument("--data-weight", type=float, default=0.5,
                   help="weight of the training loss on real clips added to the distillation losses (default 0.5)")
    p.add_argument("--data-levels", choices=["training", "student"], default="training",
                   help="noise levels of the data loss: training = the training distribution (default); "
                        "student = the student's own sampling levels, from pure noise at sigma_max")
    p.add_argument("--init", metavar="DIR",
                   help="start the students from this model folder (e.g. models/demo) instead of copies of the teacher")
    p.add_argument("--no-teacher", action="store_true",
                   help="no teacher losses: fine-tune the --init students on the data loss alone "
                        "(--out then needs only latents: keyface train latents)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep a moving average of the student's weights with this decay and ship it (default 0: off)")
    p.add_argument("--stages", default="keyframe,interpolation", help="which stages to distill")
    p.add_argument("--keyframe-steps", type=int, default=3,
                   help="the keyframe student's sampling steps (default 3; also written into the shipped folder)")
    p.add_argument("--interpolation-steps", type=int, default=1,
                   help="the interpolation student's sampling steps (default 1; also written into the shipped folder)")
    p.add_argument("--ship", help="write the student model folder here (e.g. models/demo)")
    p.add_argument("--teacher-dir", help="also write the teacher model folder here")
    p.add_argument("--data-heldout", help="held-out set .npz: its first identity becomes the default identity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from engine.bundle import load_bundle
    from export.distill import DistillConfig, distill_step_fn, make_student, teacher_trajectories
    from export.ship import bundle_size, save_identity_image, ship
    from export.train.config import STUDENT_SAMPLING, TEACHER_SAMPLING
    from export.train.dataset import SessionSet
    from export.train.loop import LoopConfig, train
    from export.train.run import file_logger, load_latents, load_stage, teacher_bundle

    check_step_counts(args, ("keyframe_steps", "interpolation_steps"), most=TEACHER_SAMPLING.keyframe_steps)
    check_teacher_options(args)
    sampling = dataclasses.replace(STUDENT_SAMPLING, keyframe_steps=args.keyframe_steps,
                                   interpolation_steps=args.interpolation_steps)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    lat = load_latents(out)
    init = load_bundle(args.init) if args.init else None
    students = {}
    for kind in ("keyframe", "interpolation"):
        teacher = None if args.no_teacher else load_stage(out / f"{kind}.pt", kind)
        start = getattr(init, kind) if init is not None else teacher
        ckpt = out / f"student_{kind}.pt"
        if kind not in args.stages.split(","):
            students[kind] = load_stage(ckpt, kind) if ckpt.is_file() else start
            continue
        steps = sampling.keyframe_steps if kind == "keyframe" else sampling.interpolation_steps
        cfg = DistillConfig(teacher_steps=TEACHER_SAMPLING.keyframe_steps, student_steps=steps,
                            data_weight=args.data_weight, data_levels=args.data_levels)
        traj = None if teacher is None else teacher_trajectories(teacher, lat, cfg, args.teacher_batches, args.clips,
                                                                  args.seed)
        student = make_student(start)
        loop = LoopConfig(steps=args.steps, lr=args.lr, seed=args.seed, warmup=10, ema_decay=args.ema)
        train(student, distill_step_fn(student, teacher, lat, traj, cfg, args.clips), loop, ckpt,
              desc=f"distill {kind}", log=file_logger(out, f"distill_{kind}"))
        students[kind] = load_stage(ckpt, kind)
    image = None
    if args.data_heldout:
        held = SessionSet.load(args.data_heldout)
        image = save_identity_image(held.neutral[0], out / "identity.png")
    if args.teacher_dir:
        ship(teacher_bundle(out), Path(args.teacher_dir), image, half=False)
    if args.ship:
        bundle = teacher_bundle(out, sampling, "keyface-demo", students["keyframe"], students["interpolation"])
        path = ship(bundle, Path(args.ship), image, half=False)
        print(f"wrote {path} ({bundle_size(path) / 1e6:.1f} MB)")
    return 0


def check_teacher_options(args: argparse.Namespace) -> None:
    """Refuse option combinations that need a teacher the run does not have."""
    if not args.no_teacher:
        return
    if not args.init:
        raise InputError("--no-teacher needs --init DIR (the students to fine-tune)")
    if args.data_weight <= 0:
        raise InputError("--no-teacher trains on the data loss alone: --data-weight must be > 0")
    if args.teacher_dir:
        raise InputError("--teacher-dir writes the teacher, which --no-teacher does not load")
