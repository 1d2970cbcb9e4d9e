"""The secrets generated into the data directory (gateway/keys.py): processes starting at
once (``serve --workers N`` on a fresh data directory) all get the same, whole value."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from gateway.keys import _generated
from gateway.settings import ConfigError


def _read_after(barrier: multiprocessing.synchronize.Barrier, path: Path,
                found: multiprocessing.queues.Queue[str]) -> None:
    barrier.wait()
    found.put(_generated(path))


def test_workers_starting_at_once_share_one_whole_secret(tmp_path: Path) -> None:
    # With the file created first and written after, a worker that found it in between
    # ran with an empty secret: tokens signed with an empty key, and its visitor hashes
    # unlike the others' (the login limit across workers then failed about 1 run in 10).
    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"round{round_}" / "auth.secret"
        barrier = context.Barrier(8)
        found: multiprocessing.queues.Queue[str] = context.Queue()
        workers = [context.Process(target=_read_after, args=(barrier, path, found))
                   for _ in range(8)]
        for worker in workers:
            worker.start()
        values = {found.get(timeout=30) for _ in workers}
        for worker in workers:
            worker.join(timeout=30)
        assert len(values) == 1 and len(values.pop()) >= 64, f"round {round_}"
        assert path.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["auth.secret"]  # no drafts left


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ip.salt").write_text("\n")
    with pytest.raises(ConfigError, match=r"ip\.salt is empty"):
        _generated(tmp_path / "ip.salt")
