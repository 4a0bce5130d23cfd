"""Burrow (Debian's 1.2.1) as a second peer: its per-partition lag and status beside `keyscope lag`'s.

Burrow 1.2.1 cannot read Kafka 4: it asks for end offsets with ListOffsets v0, which
Kafka 4.0 removed (KIP-896; the broker closes the connection), and it cannot decode
Kafka 4.4's offset-commit records (value version 4).  So this module runs its own
Apache Kafka 3.9.1 node (tests/peers/burrow/pom.xml, from Maven Central), a ZooKeeper
for Burrow (Debian's), and Burrow reading that Kafka's __consumer_offsets, all on
loopback; the scenarios are those of test_lag_alert_peers.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .peers.prometheus import apt_install, free_port, stop, wait_http
from .test_lag_alert_peers import TWELVE, commit, committed_offsets, produce

from .conftest import missing_peer

HERE = Path(__file__).parent / "peers" / "burrow"
ZK_JARS = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]


def need_debian(binary: str | None, path: str | None, package: str) -> None:
    have = lambda: (binary is None or shutil.which(binary)) and (path is None or os.path.exists(path))  # noqa: E731
    if not have():
        apt_install(package)
    if not have():
        missing_peer(f"{package} is not installed (Debian: apt-get install {package})")


def offsets_topic_ready(bootstrap: str, timeout: float = 60.0) -> None:
    """__consumer_offsets exists with a leader on every partition before Burrow starts.

    Burrow 1.2.1 starts one consumer per partition it finds at start-up and never
    looks again: a partition still without a leader then is never read.
    """
    from confluent_kafka.admin import AdminClient

    from .conftest import create_topic

    warm = f"burrow-warmup-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, warm, 1)
    commit(bootstrap, warm, {(warm, 0): 0})  # the first commit creates __consumer_offsets
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics("__consumer_offsets", timeout=5).topics.get("__consumer_offsets")
        if md is not None and md.error is None and md.partitions and all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise RuntimeError("__consumer_offsets has no leader on every partition")


def wait_zookeeper(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ZooKeeper exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"srvr")  # answers "Mode: ..." only once it serves requests ("ruok" says imok earlier)
                if b"Mode:" in s.recv(4096):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ZooKeeper not ready on port {port} after {timeout:.0f}s")


@dataclass
class Peer:
    bootstrap: str
    burrow: str  # base URL
    ends: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)  # scenario -> (group, offsets)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.burrow + path, timeout=10) as r:
            return json.load(r)

    def offsets_of(self, topic: str) -> list[int] | None:
        """Burrow's end offsets of ``topic`` (None until its topic refresh found it)."""
        try:
            return self.get(f"/v3/kafka/local/topic/{topic}").get("offsets")
        except OSError:
            return None


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    need_debian("Burrow", None, "burrow")
    need_debian(None, ZK_JARS[0], "zookeeper")
    fetched = subprocess.run(["bash", str(HERE.parent.parent / "kafka" / "fetch.sh"), str(HERE / "pom.xml")],
                             capture_output=True, text=True, timeout=600)
    if fetched.returncode != 0:
        missing_peer(f"cannot resolve Apache Kafka 3.9 with Maven: {fetched.stderr.strip()[-300:]}")
    from .kafka import KafkaCluster

    work = tmp_path_factory.mktemp("burrow")
    topics: dict[str, str] = {}  # scenario topic key -> topic name
    kafka = KafkaCluster(1)
    kafka.lib = Path(fetched.stdout.strip().splitlines()[-1])  # the same node, Kafka 3.9's jars
    zk = burrow = None
    with kafka:
        try:
            zk_port, http_port = free_port(), free_port()
            (work / "zk").mkdir()
            (work / "zoo.cfg").write_text(
                f"tickTime=2000\ndataDir={work / 'zk'}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n4lw.commands.whitelist=srvr\n")
            zk = subprocess.Popen(["java", "-Xmx96m", "-cp", ":".join(ZK_JARS),
                                   "org.apache.zookeeper.server.ZooKeeperServerMain", str(work / "zoo.cfg")],
                                  stdout=open(work / "zk.log", "w"), stderr=subprocess.STDOUT)
            wait_zookeeper(zk_port, zk)
            bs = kafka.bootstrap_server
            offsets_topic_ready(bs)
            peer = Peer(bs, "")
            for name, lags_by_topic in SCENARIOS.items():
                peer.groups[name] = setup_group(peer, {topics.setdefault(k, t()): v for k, v in lags_by_topic.items()})
            (work / "conf").mkdir()
            (work / "conf" / "burrow.toml").write_text(f"""\
[general]
pidfile="{work / 'burrow.pid'}"
[logging]
level="warn"
[zookeeper]
servers=["127.0.0.1:{zk_port}"]
timeout=6
root-path="/burrow"
[client-profile.k]
client-id="burrow-keyscope-test"
kafka-version="2.0.0"
[cluster.local]
class-name="kafka"
servers=["{bs}"]
client-profile="k"
topic-refresh=1
offset-refresh=1
[consumer.local]
class-name="kafka"
cluster="local"
servers=["{bs}"]
client-profile="k"
start-latest=false
[httpserver.default]
address="127.0.0.1:{http_port}"
[storage.default]
class-name="inmemory"
workers=2
intervals=10
expire-group=604800
min-distance=1
""")
            burrow = subprocess.Popen(["Burrow", "--config-dir", str(work / "conf")],
                                      stdout=open(work / "burrow.log", "w"), stderr=subprocess.STDOUT)
            wait_http(f"http://127.0.0.1:{http_port}/burrow/admin", burrow, "Burrow")
            peer.burrow = f"http://127.0.0.1:{http_port}"
            yield peer
        finally:
            for proc in (burrow, zk):
                if proc is not None:
                    stop(proc)


def setup_group(peer: Peer, lags_by_topic: dict[str, list[int | None]]) -> tuple[str, dict]:
    group = f"burrow-{uuid.uuid4().hex[:8]}"
    offsets = {}
    for topic, lags in lags_by_topic.items():
        if topic not in peer.ends:
            from .conftest import create_topic

            create_topic(peer.bootstrap, topic, len(lags))
            peer.ends[topic] = {p: 40 + max(lag or 0, 0) + 3 * p for p, lag in enumerate(lags)}
            produce(peer.bootstrap, topic, peer.ends[topic])
        offsets.update({(topic, p): peer.ends[topic][p] - lag for p, lag in enumerate(lags) if lag is not None})
    commit(peer.bootstrap, group, offsets)
    return group, offsets


def burrow_sees(peer: Peer, group: str, offsets: dict, timeout: float = 60.0) -> dict:
    """Burrow's lag document once it holds every commit and the end offsets we produced."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        topics_ok = all(peer.offsets_of(t) == [peer.ends[t][p] for p in sorted(peer.ends[t])]
                        for t in {t for t, _ in offsets})
        try:
            last = peer.get(f"/v3/kafka/local/consumer/{group}/lag")
        except OSError:  # 404 until Burrow has read the group's first commit
            last = None
        if topics_ok and last and not last["error"]:
            seen = {(p["topic"], p["partition"]): p["end"]["offset"] for p in last["status"]["partitions"] if p["end"]}
            if seen == offsets:
                return last["status"]
        time.sleep(0.3)
    raise AssertionError(f"Burrow did not see {group}'s commits within {timeout:.0f}s: {last}")


def side_by_side(peer: Peer, scenario: str):
    group, offsets = peer.groups[scenario]
    sizes = {}
    for topic, _ in offsets:
        sizes[topic] = len(peer.ends[topic])
    before = committed_offsets(peer.bootstrap, group, sizes)
    burrow = burrow_sees(peer, group, offsets)
    r = subprocess.run([sys.executable, "-m", "keyscope", "lag", "-b", peer.bootstrap, "-g", group, "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert committed_offsets(peer.bootstrap, group, sizes) == before  # read-only
    mine = {(t["topic"], row["partition"]): row for t in json.loads(r.stdout)["topics"] for row in t["partitions"]}
    theirs = {(p["topic"], p["partition"]): p for p in burrow["partitions"]}
    assert set(theirs) == set(mine)
    print(f"\n{scenario} ({group}): keyscope lag / alert lag / status  |  Burrow current_lag / status")
    for k in sorted(mine):
        print(f"  {k}: {mine[k]['lag']} / {mine[k]['exporter_lag']} / {mine[k]['status']}  |  "
              f"{theirs[k]['current_lag']} / {theirs[k]['status']}")
    return mine, theirs, burrow


def check_true_lags(mine, theirs):
    """Where a partition has a true lag, Burrow's current lag is keyscope's; Burrow's status follows it."""
    for k, row in mine.items():
        if row["in_ratio"]:
            assert theirs[k]["current_lag"] == row["lag"], k
            # One commit and no progress: Burrow calls a lagging partition stopped, a caught-up one OK.
            assert theirs[k]["status"] == ("STOP" if row["lag"] > 0 else "OK"), k


def t() -> str:
    return f"burrow-{uuid.uuid4().hex[:8]}"


# The scenarios of test_lag_alert_peers.py; committed before Burrow starts (it reads
# __consumer_offsets from the oldest offset; commits made after its start were not seen here).
SCENARIOS = {
    "incident": {"a": [0, 0, 339]},
    "10-5-900": {"b": [10, 5, 900]},
    "twelve": {"c": TWELVE},
    "one never committed": {"d": [10, None, 0]},
    "two never committed": {"e": [3, None, None]},
    "committed ahead": {"f": [75, 0, -30]},
    "other group": {"g": [7, 0, 0]},
    "second group, second topic": {"g": [20, 30, 0], "h": [5000, 1, 2]},
    "all zero": {"i": [0, 0, 0]},
}


@pytest.mark.parametrize("scenario", ["incident", "10-5-900", "twelve", "other group", "second group, second topic",
                                      "all zero"])
def test_true_lags_agree_with_burrow(peer, scenario):
    mine, theirs, burrow = side_by_side(peer, scenario)
    check_true_lags(mine, theirs)
    lags = [row["lag"] for row in mine.values()]
    assert burrow["maxlag"]["current_lag"] == max(lags) and burrow["totallag"] == sum(lags)


@pytest.mark.parametrize("scenario", ["one never committed", "two never committed"])
def test_never_committed_burrow_says_zero_keyscope_says_none(peer, scenario):
    mine, theirs, _ = side_by_side(peer, scenario)
    check_true_lags(mine, theirs)
    never = [k for k, row in mine.items() if row["committed_offset"] is None]
    assert never
    for k in never:
        assert mine[k]["lag"] is None and mine[k]["exporter_lag"] == -1 and mine[k]["status"] == "no committed offset"
        assert theirs[k]["end"] is None and theirs[k]["current_lag"] == 0  # Burrow: no offset, shown as lag 0


def test_committed_ahead_burrow_clamps_to_zero(peer):
    mine, theirs, _ = side_by_side(peer, "committed ahead")
    check_true_lags(mine, theirs)
    (k,) = [k for k in mine if k[1] == 2]
    assert mine[k]["lag"] == -30 and mine[k]["status"] == "committed ahead of end offset"
    assert theirs[k]["current_lag"] == 0  # Burrow hides the negative lag
