"""Views from Python: frames and reconstructions joined by scan, delivered
with their members' items."""

from __future__ import annotations

import numpy as np
import pytest

import pydiaspora as dsp


def spec(frames: str, recons: str) -> str:
    return f"""
name = "samples"

[[source]]
name = "patterns"
topic = "{frames}"
key = "scan"
count = 2

[[source]]
name = "recons"
topic = "{recons}"
key = "scan"
count = 1

[join]
mode = "all-of"
window_ms = 600000
"""


def test_a_view_joins_by_key_and_hands_over_the_members(client, topic, tmp_path):
    frames, recons = f"{topic}-f", f"{topic}-r"
    client.create_topic(frames)
    client.create_topic(recons)
    with client.producer(frames) as p:
        for scan in (1, 2):
            for k in range(2):
                p.send(np.full((4, 4), 10 * scan + k, dtype=np.uint16), metadata={"scan": scan})
    with client.producer(recons) as p:
        p.send(np.ones((4, 4), dtype=np.float32), metadata={"scan": 2})
    path = tmp_path / "view.toml"
    path.write_text(spec(frames, recons))
    with client.view(str(path)) as view:
        assert view.name == "samples"
        item = view.poll(timeout=10)
        assert item is not None
        assert item.key == "2" and len(item) == 3
        assert item.sources == ["patterns", "patterns", "recons"]
        assert sorted(item.refs[:2]) == [f"{frames}/0/2", f"{frames}/0/3"]
        assert item.refs[2] == f"{recons}/0/0"
        values = sorted(int(m.array()[0, 0]) for m in item.members[:2])
        assert values == [20, 21]
        assert item.members[2].array().dtype == np.float32
        assert view.ack(item.id) is True
        assert view.ack(item.id) is False
        assert view.poll(timeout=0.5) is None  # scan 1 has no reconstruction
        assert view.retractions() == []


def test_a_bad_view_spec_is_a_clear_error(client):
    with pytest.raises(dsp.InvalidRequest, match="view spec"):
        client.view('name = "x"\n')
