"""The ``keyface`` command line: help texts, fetch plan, model tools, NFE benchmark."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.bundle import load_bundle
from keyface.cli import main


@pytest.mark.parametrize("command", [[], ["render"], ["serve"], ["bench"], ["bench", "nfe"], ["fetch"], ["init-model"]])
def test_help_explains(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: keyface" in out and len(out) > 200


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "keyface.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "keyface-live" in out.stdout


def test_fetch_dry_run_lists_the_release(capsys, tmp_path):
    assert main(["fetch", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("keyframe.pt", "interpolation_bad.pt", "WavLM-Base+.pt", "BEATs_iter3", "wav2vec2-base-960h"):
        assert name in out
    assert not any(tmp_path.iterdir())


def test_init_model_writes_a_loadable_model_with_identity(tmp_path):
    assert main(["init-model", "--out", str(tmp_path / "m"), "--seed", "4"]) == 0
    bundle = load_bundle(tmp_path / "m")
    assert bundle.identity_image is not None and bundle.identity_image.is_file()
    assert bundle.bad is not None


def test_bench_nfe_prints_timings(capsys):
    assert main(["bench", "nfe", "--size", "tiny", "--stage", "both", "--repeat", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("keyframe", "interpolation"))]
    assert len(lines) == 2 and all(float(line.split()[3]) > 0 for line in lines)
