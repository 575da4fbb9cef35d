"""A node that requires identities: a client certificate and a token from
Python, and the errors an anonymous or unauthorised client gets."""

from __future__ import annotations

import subprocess

import pytest

import pydiaspora as dsp
from conftest import ServedNode, diaspora_bin


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("secured")
    node = ServedNode(root / "data", "--auth", "cert-or-token", "--superuser", "admin", ready=False)
    try:
        clients = root / "clients"

        def cli(*args: str, admin: bool = True) -> str:
            cmd = [diaspora_bin(), *args]
            if admin:
                cmd += ["--ca", node.ca, "--admin", node.admin, "--cert", str(clients / "admin.pem"), "--cert-key", str(clients / "admin.key")]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, f"{args}: {out.stderr}"
            return out.stdout

        node.wait_for_ca()
        cli("certs", "client", "--name", "admin", "--ca-dir", str(root / "data" / "certs"), "--out", str(clients), admin=False)
        node.identity = (str(clients / "admin.pem"), str(clients / "admin.key"))
        node.wait_ready()
        cli("topic", "create", "frames")
        cli("topic", "create", "secrets")
        cli("user", "add", "alice")
        cli("acl", "grant", "allow User:alice write topic:frames", "allow User:alice read topic:frames")
        token = cli("token", "create", "--user", "alice", "--ttl", "1h").strip()
        yield node, token
    finally:
        node.stop()


def test_a_certificate_and_a_token_authenticate_and_the_acl_holds(secured, monkeypatch):
    node, token = secured
    cert, key = node.identity
    admin = dsp.Client(node.addr, node.ca, admin=node.admin, cert=cert, key=key)
    assert {"frames", "secrets"} <= set(admin.topics())
    admin.close()

    monkeypatch.setenv("DIASPORA_TOKEN", token)  # read as the command line reads it
    alice = dsp.Client(node.addr, node.ca, admin=node.admin)
    with alice.producer("frames") as p:
        assert p.send_wait(b"from alice", timeout=10).offset == 0
    c = alice.consumer("frames")
    assert c.poll(timeout=10).data == b"from alice"
    c.close()
    with pytest.raises(dsp.PermissionDenied, match="alice"):
        alice.producer("secrets").send_wait(b"no", timeout=10)
    alice.close()


def test_an_anonymous_or_badly_identified_client_is_refused(secured, monkeypatch):
    node, _ = secured
    monkeypatch.delenv("DIASPORA_TOKEN", raising=False)
    anonymous = dsp.Client(node.addr, node.ca, admin=node.admin)
    with pytest.raises(dsp.Unauthenticated):
        anonymous.producer("frames").send_wait(b"x", timeout=10)
    anonymous.close()
    with pytest.raises(dsp.Unauthenticated, match="malformed token"):
        dsp.Client(node.addr, node.ca, token="dsp_not_a_token")
    with pytest.raises(dsp.Unauthenticated):
        dsp.Client(node.addr, node.ca, token="dsp_" + "0" * 16 + "_" + "0" * 64)
    with pytest.raises(dsp.InvalidRequest, match="cert= and key="):
        dsp.Client(node.addr, node.ca, cert=node.identity[0])
