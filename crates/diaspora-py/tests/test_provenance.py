"""Provenance from Python: a producer records lineage, an invalidation
cascades, and Python reads the why-chain, lineage and model knowledge."""

from __future__ import annotations

import numpy as np
import pytest

import pydiaspora as dsp


def test_an_invalidation_is_seen_from_python(client, topic, tmp_path):
    store = str(tmp_path / "prov.sqlite")
    frames, recons = f"{topic}-frames", f"{topic}-recons"
    client.create_topic(frames)
    client.create_topic(recons)
    with client.producer(frames, provenance=store, tag_keys=["scan"]) as p:
        for i in range(6):
            p.send(np.full((8, 8), i, dtype=np.uint16), metadata={"scan": 42 if i < 3 else 43})
    # A reconstruction derived from pairs of frames.
    c = client.consumer(frames)
    items = [c.poll(timeout=10) for _ in range(6)]
    c.close()
    with client.producer(recons, provenance=store) as p:
        for a, b in zip(items[0::2], items[1::2]):
            p.send(
                (a.array().astype(np.float32) + b.array()) / 2,
                sources=[a, b.ref],
                activity="epie-reconstruct",
                model_versions=[],
            )

    prov = dsp.Provenance(store)
    first_recon = f"{recons}/0/0"
    up = prov.lineage(first_recon, "up")
    names = {r["name"] for r in up["records"]}
    assert {first_recon, f"{frames}/0/0", f"{frames}/0/1"} <= names
    assert up["root"] == prov.resolve(first_recon)[0]
    down = prov.lineage(items[1], "down")
    assert first_recon in {r["name"] for r in down["records"]}
    assert prov.get(items[0])["tags"]["scan"] == 42
    assert prov.why(first_recon) is None

    report = prov.invalidate(items[1], "detector fault: hot pixel", cascade=True)
    assert report["invalidated"] == 2  # the frame and the reconstruction
    assert prov.is_invalid(first_recon)
    assert not prov.is_invalid(f"{recons}/0/1")
    why = prov.why(first_recon)
    assert why["event"]["cause"] == "detector fault: hot pixel"
    assert [s["name"] for s in why["chain"]] == [first_recon, f"{frames}/0/1"]
    with pytest.raises(dsp.NotFound):
        prov.why(f"{frames}/0/999")
    with pytest.raises(dsp.InvalidRequest):
        prov.lineage(first_recon, "sideways")


def test_model_at_answers_what_a_model_knew(tmp_path):
    prov = dsp.Provenance(str(tmp_path / "models.sqlite"))
    a = prov.add("pair-a", tags={"scan": 1})
    b = prov.add("pair-b", tags={"scan": 2})
    model = prov.add("surrogate", kind="model")  # version 1, trained on nothing
    assert prov.model_at("surrogate", 0) is None  # before it existed
    k1 = prov.model_at("surrogate")
    assert k1["version"] == 1 and k1["id"] == model and k1["records"] == []
    v2 = prov.update_model(model, [a])
    k2 = prov.model_at("surrogate")
    v3 = prov.update_model(model, [b])
    k3 = prov.model_at("surrogate")
    assert (k2["version"], k2["id"], k2["records"]) == (2, v2, [a])
    assert (k3["version"], k3["id"], sorted(k3["records"])) == (3, v3, sorted([a, b]))
    # What it knew at version 2's time, asked after version 3 exists.
    assert prov.model_at("surrogate", k2["time_us"])["records"] == [a]
    assert prov.get(f"surrogate@3")["id"] == v3
    assert {r["name"] for r in prov.lineage(v3, "up")["records"]} >= {"pair-b"}
