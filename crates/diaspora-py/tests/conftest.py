"""Fixtures: a real `diaspora serve` process per test module (the binary
the workspace builds, never a mock), on free ports in a temporary data
directory, stopped and reaped on every path."""

from __future__ import annotations

import ctypes
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest

import pydiaspora as dsp

REPO = pathlib.Path(__file__).resolve().parents[3]


def diaspora_bin() -> str:
    """The `diaspora` binary: $DIASPORA_BIN, else the workspace's debug build."""
    env = os.environ.get("DIASPORA_BIN")
    if env:
        return env
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        p = target / profile / "diaspora"
        if p.exists():
            return str(p)
    which = shutil.which("diaspora")
    if which:
        return which
    raise RuntimeError(
        "no diaspora binary: build it with `cargo build` or set DIASPORA_BIN"
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when pytest dies, whatever
    kills pytest (the fixtures' cleanup covers every other path)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        tcp = s.getsockname()[1]
    return udp if udp != tcp else tcp


class ServedNode:
    """A `diaspora serve` child process."""

    def __init__(self, data_dir: pathlib.Path, *extra: str, ready: bool = True) -> None:
        """Starts the node; with `ready`, waits until it answers (a node
        that requires identities is waited for with `wait_ready` once
        `identity` is set)."""
        self.data_dir = data_dir
        self.identity: tuple[str, str] | None = None
        self.addr = f"127.0.0.1:{free_port()}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.ca = str(data_dir / "certs" / "ca.pem")
        self.log = open(data_dir.parent / f"{data_dir.name}.log", "wb")
        self.proc = subprocess.Popen(
            [
                diaspora_bin(),
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                self.addr,
                "--admin",
                self.admin,
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        if ready:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"diaspora serve exited with {self.proc.returncode}: "
                + pathlib.Path(self.log.name).read_text(errors="replace")
            )

    def wait_for_ca(self, timeout: float = 30.0) -> None:
        """Waits until the node has written its CA."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.ca):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no CA at {self.ca} after {timeout} s")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until the node answers a client (as `identity`, if set)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            if os.path.exists(self.ca):
                try:
                    c = self.client(connect_timeout=1.0)
                    c.topics()
                    c.close()
                    return
                except dsp.DiasporaError as e:
                    last = e
            time.sleep(0.1)
        raise RuntimeError(f"diaspora serve not ready in {timeout} s: {last}")

    def client(self, **kw) -> dsp.Client:
        if self.identity is not None:
            kw.setdefault("cert", self.identity[0])
            kw.setdefault("key", self.identity[1])
        return dsp.Client(self.addr, self.ca, admin=self.admin, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    n = ServedNode(tmp_path_factory.mktemp("node") / "data", "--item-bytes-max", str(4 << 20))
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def client(node: ServedNode) -> Iterator[dsp.Client]:
    c = node.client()
    try:
        yield c
    finally:
        c.close()


_topics = iter(range(1, 1 << 30))


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name per test."""
    return f"py-{request.node.name.replace('[', '-').replace(']', '')}-{next(_topics)}"
