"""Producing and consuming through a real node: round trips, NumPy without
copies, consumer groups, seeking, asyncio, and the error classes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import pydiaspora as dsp


def test_round_trip_keeps_payload_metadata_headers_key_and_order(client, topic):
    assert client.create_topic(topic, partitions=1) is True
    assert client.create_topic(topic, partitions=1) is False  # found, same count
    assert topic in client.topics()
    with client.producer(topic) as p:
        deliveries = [
            p.send(
                f"frame {i}".encode(),
                metadata={"scan": 17, "energy_kev": 8.5, "ok": i % 2 == 0, "det": "eiger", "raw": b"\x00\x01"},
                headers={"origin": "beamline"},
                key=f"k{i}",
            )
            for i in range(200)
        ]
        p.flush()
    assert all(d.done() for d in deliveries)
    offsets = [d.result(timeout=10).offset for d in deliveries]
    assert offsets == list(range(200))
    assert client.partitions(topic) == {0: (0, 200)}

    c = client.consumer(topic, partitions=[0])
    got = c.poll_many(max_items=500, timeout=10)
    while len(got) < 200:
        more = c.poll_many(max_items=500, timeout=10)
        assert more, f"only {len(got)} of 200 items came back"
        got += more
    c.close()
    assert [it.offset for it in got] == list(range(200))
    it = got[5]
    assert it.data == b"frame 5"
    assert bytes(it.payload) == b"frame 5"
    assert it.ref == f"{topic}/0/5"
    assert it.metadata == {"scan": 17, "energy_kev": 8.5, "ok": False, "det": "eiger", "raw": b"\x00\x01"}
    assert it.headers == {"origin": "beamline"}
    assert it.key == b"k5"
    assert it.timestamp_us > 1_600_000_000_000_000
    assert client.read_payload(it.ref) == b"frame 5"


def test_numpy_arrays_travel_with_dtype_and_shape_and_come_back_without_a_copy(client, topic):
    client.create_topic(topic)
    frame = (np.arange(64 * 48, dtype=np.uint16) * 3).reshape(64, 48)
    floats = np.linspace(0, 1, 10, dtype=np.float32)[::2]  # not contiguous: sent as a copy
    with client.producer(topic) as p:
        p.send_wait(frame, metadata={"scan": 3})
        p.send_wait(floats)
        p.send_wait(b"not an array")
    c = client.consumer(topic)
    a, f, raw = (c.poll(timeout=10) for _ in range(3))
    c.close()

    arr = a.array()
    assert arr.dtype == np.uint16 and arr.shape == (64, 48)
    np.testing.assert_array_equal(arr, frame)
    assert a.metadata["ndarray.dtype"] == "u16" and a.metadata["ndarray.shape"] == "64,48"
    assert a.metadata["scan"] == 3
    # Zero copy: the array's buffer is the received payload's memory.
    payload = a.payload
    assert arr.__array_interface__["data"][0] == payload.address
    assert np.shares_memory(arr, np.frombuffer(payload, dtype=np.uint8))
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0, 0] = 1
    np.testing.assert_array_equal(f.array(), floats)
    assert f.array().dtype == np.float32
    assert not raw.is_array
    with pytest.raises(dsp.ArrayError):
        raw.array()


def test_a_group_member_resumes_after_its_last_commit(client, topic):
    client.create_topic(topic, partitions=3)
    with client.producer(topic) as p:
        for i in range(90):
            p.send(str(i), key=str(i))
    seen: list[str] = []
    c = client.consumer(topic, group="resume")
    for _ in range(40):
        it = c.poll(timeout=15)
        assert it is not None
        seen.append(it.data.decode())
    c.commit()
    c.close()
    # Read past the commit without committing: a crash after these.
    c = client.consumer(topic, group="resume")
    lost = [c.poll(timeout=15) for _ in range(5)]
    assert all(x is not None for x in lost)
    c.close()
    c = client.consumer(topic, group="resume")
    while len(seen) < 90:
        it = c.poll(timeout=15)
        assert it is not None, f"{len(seen)} of 90 items"
        seen.append(it.data.decode())
    assert c.poll(timeout=1) is None
    c.commit()
    c.close()
    assert sorted(seen, key=int) == [str(i) for i in range(90)]  # each once


def test_seek_and_iteration(client, topic):
    client.create_topic(topic)
    with client.producer(topic) as p:
        for i in range(10):
            p.send(bytes([i]))
    with client.consumer(topic, partitions=[0], start="latest") as c:
        assert c.assignment() == [0]
        assert c.poll(timeout=0.5) is None
        c.seek(0, 7)
        assert c.poll(timeout=10).data == bytes([7])
        c.seek(0, "earliest")
        out = []
        for it in c:
            out.append(it.data[0])
            if len(out) == 10:
                break
        assert out == list(range(10))
        assert c.positions() == {0: 10}


def test_asyncio_produce_and_async_iteration(client, topic):
    client.create_topic(topic)
    p = client.producer(topic)

    async def main() -> list[int]:
        delivered = await asyncio.gather(*(p.send_async(np.full(4, i, dtype=np.int32)) for i in range(20)))
        assert sorted(d.offset for d in delivered) == list(range(20))
        d = p.send(np.zeros(1, dtype=np.int32))
        assert (await d.wait_async()).offset == 20
        assert (await d).offset == 20  # a Delivery is awaitable itself
        c = client.consumer(topic, group="async")
        out = []
        async for it in c:
            out.append(int(it.array()[0]))
            if len(out) == 21:
                break
        assert await c.poll_async(timeout=0.2) is None
        await c.commit_async()
        c.close()
        return out

    out = asyncio.run(main())
    p.close()
    assert sorted(out[:20]) == list(range(20)) and out[20] == 0


def test_each_fabric_error_is_its_own_exception(client, node, topic):
    with pytest.raises(dsp.UnknownTopic):
        client.producer("no-such-topic")
    client.create_topic(topic, partitions=2)
    with pytest.raises(dsp.TopicExists):
        client.create_topic(topic, partitions=3)
    with pytest.raises(dsp.UnknownPartition):
        client.consumer(topic, partitions=[9])
    with pytest.raises(dsp.InvalidRequest):
        client.create_topic("bad topic name!", partitions=1)
    p = client.producer(topic)
    too_big = np.zeros(5 << 20, dtype=np.uint8)  # the node takes at most 4 MiB
    with pytest.raises(dsp.LimitExceeded):
        p.send_wait(too_big, timeout=30)
    with pytest.raises(dsp.InvalidRequest):
        p.send(b"x", metadata={"bad": [1, 2]})
    with pytest.raises(TypeError, match='unexpected keyword argument "metdata"'):
        p.send(b"x", metdata={"scan": 1})
    with pytest.raises(dsp.InvalidRequest, match="activity must be a str"):
        p.send(b"x", activity=3)
    with pytest.raises(dsp.ArrayError):
        p.send(np.zeros(3, dtype=np.complex64))
    p.close()
    with pytest.raises(dsp.ShutDown):
        p.send(b"after close")
    with pytest.raises(dsp.ConnectionFailed):
        dsp.Client("127.0.0.1:9", node.ca, connect_timeout=0.5)
    with pytest.raises(dsp.InvalidRequest):
        dsp.Client("not-an-address", node.ca)
    # Every class is a DiasporaError.
    for cls in (dsp.UnknownTopic, dsp.LimitExceeded, dsp.ConnectionFailed, dsp.NotFound, dsp.Fenced):
        assert issubclass(cls, dsp.DiasporaError)


def test_an_embedded_node_in_this_process(tmp_path):
    with dsp.Node(tmp_path / "embedded") as node:
        node.create_topic("frames", partitions=2)
        client = node.client()
        with client.producer("frames") as p:
            p.send_wait(np.eye(3, dtype=np.float64), partition=1)
        c = client.consumer("frames", partitions=[1])
        np.testing.assert_array_equal(c.poll(timeout=10).array(), np.eye(3))
        c.close()
        client.close()


def test_array_metadata_from_the_wire_is_checked_not_trusted(client, topic):
    client.create_topic(topic)
    with client.producer(topic) as p:
        p.send_wait(np.array(7.5, dtype=np.float64))  # 0-d
        p.send_wait(b"\x00" * 6, metadata={"ndarray.dtype": "u16", "ndarray.shape": "3,x"})
        p.send_wait(b"\x00" * 6, metadata={"ndarray.dtype": "u16", "ndarray.shape": "4"})
        p.send_wait(b"\x00" * 6, metadata={"ndarray.dtype": "c64", "ndarray.shape": "3"})
        p.send_wait(b"\x00" * 6, metadata={"ndarray.dtype": "u16", "ndarray.shape": "1,1,1,1,1,1,1,1,3"})
        with pytest.raises(dsp.ArrayError, match="axes"):
            p.send(np.zeros((1,) * 9, dtype=np.uint8))
    c = client.consumer(topic)
    scalar, bad_shape, short, unknown, deep = (c.poll(timeout=10) for _ in range(5))
    c.close()
    a = scalar.array()
    assert a.shape == () and float(a) == 7.5
    for it, match in ((bad_shape, "shape"), (short, "needs 8"), (unknown, "c64"), (deep, "axes")):
        with pytest.raises(dsp.ArrayError, match=match):
            it.array()


def test_a_blocking_wait_releases_the_gil(client, topic):
    import threading
    import time

    client.create_topic(topic)
    c = client.consumer(topic)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(c.poll(timeout=1.0)))
    t.start()
    # While the other thread waits in poll for a second, this one keeps
    # running Python: had poll held the GIL, one gap here would be ~1 s.
    longest = 0.0
    last = time.monotonic()
    while t.is_alive():
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
    t.join()
    c.close()
    assert result == [None]
    assert longest < 0.3, f"this thread stood still for {longest:.2f} s while poll waited"
