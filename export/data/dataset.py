"""Write and read synthetic datasets: ``.npz`` shards of clips plus a JSON index.

Layout of a dataset folder::

    index.json          # format, split, seed, size, rates, param names, per-clip metadata
    shard_00000.npz     # frames (N, H, W, 3) uint8, audio (N * 640,) float32,
    shard_00001.npz     # params (N, P) float32, emotion (N, 2) float32, offsets (clips + 1,) int64
    ...

Clip ``k`` of a shard owns frames ``offsets[k]:offsets[k + 1]`` and the matching audio samples
(``640 *`` those). Clip ``i`` of a dataset is ``generate_clip(clip_seed(seed, split, i), split)``,
so any clip can be regenerated from the index alone.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .clip import (
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    Clip,
    ClipConfig,
    Segment,
    clip_seed,
    generate_clip,
    identity_seed,
)
from .identity import Identity
from .params import PARAM_NAMES
from .speech import Phone, Voice

FORMAT = "keyface-synthetic-faces/1"


def _make_clip(job: tuple[int, str, ClipConfig, int | None, int]) -> Clip:
    index, split, config, n_identities, seed = job
    identity = None
    if n_identities:
        identity = Identity.sample(identity_seed(seed, split, index % n_identities))
    return generate_clip(clip_seed(seed, split, index), split, config, identity=identity)


def _write_shard(path: Path, clips: list[Clip]) -> None:
    offsets = np.cumsum([0] + [c.n_frames for c in clips]).astype(np.int64)
    arrays = {
        "audio": np.concatenate([c.audio for c in clips]),
        "params": np.concatenate([c.params for c in clips]),
        "emotion": np.concatenate([c.emotion for c in clips]),
        "offsets": offsets,
    }
    if all(c.frames is not None for c in clips):
        arrays["frames"] = np.concatenate([c.frames for c in clips])
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def generate_dataset(out_dir: str | os.PathLike[str], n_clips: int, resolution: int = 64, seed: int = 0,
                     split: str = "train", workers: int = 0, shard_size: int = 64,
                     config: ClipConfig | None = None, n_identities: int | None = None,
                     progress: bool = True) -> Path:
    """Generate ``n_clips`` clips into ``out_dir``; returns the path of ``index.json``.

    ``workers`` > 1 generates clips in that many processes (the output does not depend on it).
    ``n_identities`` reuses that many identities round-robin (default: a new one per clip).
    Held-out splits use other identity seeds, sentences, words and voices than train.
    """
    config = dataclasses.replace(config or ClipConfig(), size=int(resolution))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(i, split, config, n_identities, int(seed)) for i in range(int(n_clips))]
    entries: list[dict] = []
    shard: list[Clip] = []
    bar = tqdm(total=len(jobs), desc=f"{split} clips", unit="clip", disable=not progress)

    def flush() -> None:
        if not shard:
            return
        name = f"shard_{len({e['shard'] for e in entries}):05d}.npz"
        _write_shard(out / name, shard)
        start = 0
        for k, clip in enumerate(shard):
            entries.append({"id": len(entries), "shard": name, "index": k, "frame_start": start,
                            **clip.metadata()})
            start += clip.n_frames
        shard.clear()

    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results: Iterator[Clip] = pool.imap(_make_clip, jobs, chunksize=1) if pool else map(_make_clip, jobs)
        for clip in results:
            shard.append(clip)
            bar.update(1)
            if len(shard) >= shard_size:
                flush()
        flush()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    index = {
        "format": FORMAT, "split": split, "seed": int(seed), "size": int(resolution), "fps": FPS,
        "sample_rate": SAMPLE_RATE, "samples_per_frame": SAMPLES_PER_FRAME, "param_names": list(PARAM_NAMES),
        "n_identities": n_identities, "config": dataclasses.asdict(config),
        "n_clips": len(entries), "n_frames": int(sum(e["n_frames"] for e in entries)), "clips": entries,
    }
    path = out / "index.json"
    path.write_text(json.dumps(index, separators=(",", ":")))
    return path


class SynthDataset:
    """Random access to the clips of a dataset folder (one shard cached at a time)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.index = json.loads((self.root / "index.json").read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{self.root} is not a {FORMAT} dataset")
        self.clips: list[dict] = self.index["clips"]
        self._cache: tuple[str, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.clips)

    def _shard(self, name: str) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != name:
            with np.load(self.root / name) as z:
                self._cache = (name, {k: z[k] for k in z.files})
        return self._cache[1]

    def __getitem__(self, i: int) -> Clip:
        meta = self.clips[i]
        arrays = self._shard(meta["shard"])
        a, b = (int(x) for x in arrays["offsets"][meta["index"]:meta["index"] + 2])
        frames = arrays["frames"][a:b] if "frames" in arrays else None
        return Clip(
            frames=frames, audio=arrays["audio"][a * SAMPLES_PER_FRAME:b * SAMPLES_PER_FRAME],
            params=arrays["params"][a:b], emotion=arrays["emotion"][a:b],
            identity=Identity.from_dict(meta["identity"]), voice=Voice(**meta["voice"]),
            segments=[Segment(**s) for s in meta["segments"]],
            phones=[Phone(s, a_, b_) for s, a_, b_ in meta["phones"]], seed=meta["seed"], split=meta["split"],
        )

    def __iter__(self) -> Iterator[Clip]:
        for i in range(len(self)):
            yield self[i]
