"""A real Apache Kafka (KRaft, combined broker+controller nodes) on loopback ports.

The jars come from Maven Central through ``fetch.sh`` (pinned in ``pom.xml``),
cached outside the repo.  Each node is one JVM we start and stop by its own pid;
its log directory is kept (and its tail shown) when something fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kafka_lib_dir() -> Path:
    """Resolve (once, cached) the pinned broker jars; raise with the reason if impossible."""
    out = subprocess.run(["bash", str(HERE / "fetch.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cannot resolve Apache Kafka with Maven: {out.stderr.strip()[-800:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Node:
    node_id: int
    port: int  # the PLAINTEXT client listener
    controller_port: int
    dir: Path
    extra_ports: dict[str, int] = field(default_factory=dict)  # listener name -> port
    process: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class KafkaCluster:
    """``nodes`` combined broker+controller nodes; a context manager.

    ``listeners`` adds client listeners beside PLAINTEXT, as
    ``{"SASL": "SASL_PLAINTEXT"}`` (name -> security protocol); ``properties``
    are extra server properties for every node (strings, as in server.properties).
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        listeners: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        heap: str = "512m",
        startup_timeout: float = 90.0,
    ):
        self.lib = kafka_lib_dir()
        self.root = Path(tempfile.mkdtemp(prefix="keyscope-kafka-"))
        self.listeners = dict(listeners or {})
        self.properties = dict(properties or {})
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.cluster_id = self._random_cluster_id()
        self.nodes = [
            Node(i + 1, free_port(), free_port(), self.root / f"node{i + 1}",
                 {name: free_port() for name in self.listeners})
            for i in range(nodes)
        ]
        self.failed = False

    # -- addresses -------------------------------------------------------
    @property
    def bootstrap_server(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def listener_bootstrap(self, name: str) -> str:
        return ",".join(f"127.0.0.1:{n.extra_ports[name]}" for n in self.nodes)

    # -- lifecycle -------------------------------------------------------
    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java not found: the real Kafka broker needs Java 17")
        return [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",  # C1 only: starts faster, ample for tests
                "-Djava.awt.headless=true", "-cp", str(self.lib / "*")]

    @staticmethod
    def _random_cluster_id() -> str:
        import base64

        return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    def _config(self, node: Node) -> Path:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}", f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        protomap = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, proto in self.listeners.items():
            listeners.append(f"{name}://127.0.0.1:{node.extra_ports[name]}")
            advertised.append(f"{name}://127.0.0.1:{node.extra_ports[name]}")
            protomap.append(f"{name}:{proto}")
        rf = min(3, len(self.nodes))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protomap),
            "log.dirs": str(node.dir / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(rf),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.backoff.ms": "200",
            "log.retention.check.interval.ms": "500",
            "log.segment.delete.delay.ms": "100",
            "file.delete.delay.ms": "100",
        }
        props.update(self.properties)
        path = node.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self) -> "KafkaCluster":
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            cfg = self._config(node)
            fmt = subprocess.run(
                self._java() + ["kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}", "-c", str(cfg)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                self.failed = True
                raise RuntimeError(f"kafka storage format failed: {(fmt.stdout + fmt.stderr)[-800:]}")
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        self.wait_ready()
        return self

    def start_node(self, node_id: int, wait: bool = True) -> None:
        node = self.node(node_id)
        if node.alive:
            return
        logs = node.dir / "logs"
        logs.mkdir(exist_ok=True)
        out = open(logs / "stdout.log", "ab")
        node.process = subprocess.Popen(
            self._java() + [f"-Dkafka.logs.dir={logs}",
                            f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
                            "kafka.Kafka", str(node.dir / "server.properties")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        if wait:
            self.wait_ready()

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def wait_ready(self) -> None:
        """Until every live node accepts connections and metadata lists all live brokers."""
        import logging

        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.startup_timeout
        live = [n for n in self.nodes if n.alive]
        want = {n.node_id for n in live}
        pending = list(live)
        last = "not listening"
        admin = None
        quiet = logging.getLogger("keyscope.tests.kafka")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.process is not None and n.process.poll() is not None:
                    self.failed = True
                    raise RuntimeError(f"kafka node {n.node_id} exited ({n.process.returncode}): {self.log_tail(n.node_id)}")
            if pending:
                try:
                    with socket.create_connection(("127.0.0.1", pending[0].port), timeout=0.5):
                        pending.pop(0)
                except OSError:
                    time.sleep(0.1)
                continue
            if admin is None:
                admin = AdminClient({"bootstrap.servers": ",".join(f"127.0.0.1:{n.port}" for n in live),
                                     "logger": quiet})
            try:
                md = admin.list_topics(timeout=2)
                if set(md.brokers) >= want:
                    return
                last = f"brokers {sorted(md.brokers)} of {sorted(want)}"
            except Exception as e:  # not ready yet
                last = str(e)
            time.sleep(0.2)
        self.failed = True
        raise RuntimeError(f"kafka did not become ready in {self.startup_timeout}s ({last}): {self.log_tail(live[0].node_id)}")

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Stop one node abruptly (our own pid only)."""
        node = self.node(node_id)
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(sig)
            node.process.wait(timeout=30)

    def log_tail(self, node_id: int, chars: int = 1500) -> str:
        node = self.node(node_id)
        texts = []
        for name in ("stdout.log", "server.log"):
            p = node.dir / "logs" / name
            if p.exists():
                texts.append(p.read_text(errors="replace")[-chars:])
        return "\n".join(texts).strip() or "(no output)"

    def stop(self) -> None:
        procs = [n.process for n in self.nodes if n.process is not None and n.process.poll() is None]
        for node in self.nodes:
            node.process = None
        for proc in procs:  # all at once: one by one, the last ones wait for a quorum
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.failed or os.environ.get("KEYSCOPE_KEEP_KAFKA_LOGS"):
            print(f"kafka logs kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "KafkaCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.failed = True
        self.stop()
