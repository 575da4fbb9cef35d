"""QoS streams from Python: a policy file, items in sequence with their
quality, figures, and a checkpoint a restarted consumer resumes from."""

from __future__ import annotations

import numpy as np
import pytest

import pydiaspora as dsp

POLICY = """
target_rate_hz = 200.0
latency_bound_ms = 500
reorder_items_max = 1000
[flow]
mode = "backpressure"
"""


def test_a_stream_under_a_policy_file_delivers_in_sequence_and_resumes(client, topic, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    created = client.init_stream(topic, partitions=1)
    assert sorted(created) == sorted([topic, f"{topic}.qos", f"{topic}.replay"])
    assert client.init_stream(topic, partitions=1) == []

    with client.stream_producer(topic, policy=str(policy)) as p:
        decided = [p.send(np.full((16, 16), i, dtype=np.uint16), metadata={"frame": i}) for i in range(40)]
        p.flush(timeout=30)
        report = p.report()
    assert [d for d in decided] == [("accepted", i) for i in range(40)]
    assert report["accepted"] == 40

    checkpoint = tmp_path / "consumer.ckpt"
    c = client.stream_consumer(topic, policy=str(policy), name="py-test", checkpoint=str(checkpoint))
    got = []
    while len(got) < 25:
        s = c.poll(timeout=10)
        assert s is not None, f"{len(got)} of 25"
        got.append(s)
    c.close()
    assert [s.seq for s in got] == list(range(25))
    assert all(s.quality == "original" and s.stored and not s.replayed for s in got)
    assert int(got[7].item.array()[0, 0]) == 7 and got[7].item.metadata["frame"] == 7

    # A restarted consumer resumes after the checkpoint.
    with client.stream_consumer(topic, policy=str(policy), name="py-test", checkpoint=str(checkpoint)) as c:
        s = c.poll(timeout=10)
        assert s is not None and s.seq == 25
        assert c.report()["delivered"] >= 1


def test_a_bad_policy_or_a_missing_stream_is_a_clear_error(client, topic, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("latency_bound_msx = 3\n")
    with pytest.raises(dsp.InvalidRequest, match="policy"):
        client.stream_producer(topic, policy=str(bad))
    with pytest.raises(dsp.UnknownTopic, match="stream init"):
        client.stream_producer(f"{topic}-none")
