"""Progress: the library logs and never prints; the CLI shows lines, and bars on a terminal."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
from click.testing import CliRunner

import latentsearch as ls
from latentsearch import progress
from latentsearch.cli import main


def test_the_library_logs_and_never_prints(tmp_path, capfd, caplog):
    x = np.random.default_rng(0).normal(size=(12_000, 8)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="latentsearch"):
        ls.build_vectors(x, name="v", root=tmp_path, quiet=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "latentsearch"]
    assert any(line.startswith("auto: measuring candidate indexes") for line in lines)
    assert any(line.startswith("index ") for line in lines)


def test_quiet_library_calls_log_at_debug_only(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="latentsearch"):
        ls.build_vectors(np.eye(4), name="q", root=tmp_path, quiet=True)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_bars_draw_only_when_turned_on(monkeypatch):
    import io

    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    try:
        progress.configure(bars=True)
        for _ in progress.bar(range(3), desc="work"):
            pass
        assert "work:   0%" in fake.getvalue() and "0/3" in fake.getvalue()
        fake.truncate(0)
        for _ in progress.bar(range(3), desc="hushed", quiet=True):
            pass
        progress.configure(bars=False)
        for _ in progress.bar(range(3), desc="off"):
            pass
        assert "hushed" not in fake.getvalue() and "off" not in fake.getvalue()
    finally:
        progress.configure(bars=False)


def test_cli_prints_progress_lines_on_stderr_and_quiet_silences_them(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(1).normal(size=(300, 8)))
    base = ["build", "vectors", str(tmp_path / "v.npy"), "--root", str(tmp_path), "--name"]
    r = CliRunner().invoke(main, base + ["a"])
    assert r.exit_code == 0 and "index Flat over 300 vectors" in r.stderr
    assert "%|" not in r.stderr  # not a terminal: no bars
    r = CliRunner().invoke(main, base + ["b", "--quiet"])
    assert r.exit_code == 0 and r.stderr == "" and "built b" in r.stdout


def _on_a_terminal(args, cwd):
    """Run ``latentsearch ARGS`` with stdout and stderr on a 100-column pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "latentsearch", *args], stdin=slave,
                            stdout=slave, stderr=slave, cwd=cwd, close_fds=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=300) == 0, out[-2000:]
    os.close(master)
    return out.decode("utf-8", "replace")


def test_a_terminal_sees_a_bar_with_rate_and_eta(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(2).normal(size=(12_000, 8)))
    base = ["build", "vectors", str(tmp_path / "v.npy"), "--root", str(tmp_path), "--name"]
    shown = _on_a_terminal(base + ["t"], tmp_path)
    assert "auto: measuring candidates" in shown and ("index/s" in shown or "s/index" in shown)
    assert "<" in shown  # tqdm's [elapsed<remaining] ETA
    hushed = _on_a_terminal(base + ["u", "--quiet"], tmp_path)
    assert "measuring" not in hushed and "built u" in hushed
