"""Records/s `keyscope exporter` keeps up with on one core, against the topic's produce rate, in one run (issue 16).

One real Apache Kafka node (tests/kafka, KRaft), one 6-partition topic.  The
exporter is started cold from the shell as a user runs it (the ``keyscope``
console script) and pinned to one core (``taskset -c 0``); a confluent-kafka
producer in this process (pinned to the other core when there is one) writes
keyed records (Zipf-ish over 100k keys plus one hot key, ~60-byte values) to
real Kafka while the exporter tails it.  Read counts come from the exporter's
own ``keyscope_partition_records_total`` (scraped once per step, as Prometheus
would); CPU from the child's utime + stime in /proc/PID/stat (every thread),
and its total from ``os.wait4``'s rusage after SIGTERM.

* paced steps: the producer holds a target rate for a few seconds; the
  exporter's read rate = the step's records / (step start until it has read
  them all), the ratio to the produce rate, whether it had read everything
  within 2 s of the last acknowledgement ("kept up"), and CPU seconds per 100k
  records (= cores busy at 100k records/s);
* unpaced: the producer as fast as it goes;
* catch-up: the exporter is stopped (SIGSTOP), a backlog is produced, then it is
  resumed and timed until it has read it all: its ceiling on one core, with no
  producer competing for the CPU;
* memory (full mode: 5 minutes, 1M distinct keys, ``--window 1m`` so the window
  turns over five times): a second exporter's RSS (/proc/PID/status VmRSS)
  every 10 s, the hot-key series against the top-K cap, and the published share
  of a key that is exactly 20% of every 10 records against that 20%, within
  the exporter's published bound.

Run: ``python benchmarks/bench_exporter.py [--quick] [--json FILE]``
(full: ~9 minutes; --quick: < 60 s, shorter steps, 160k distinct keys over 8 s in a 30 s window).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import parser, print_table, write_json  # noqa: E402

PARTITIONS = 6
HOT = b"stark-industries"
TICK = os.sysconf("SC_CLK_TCK")


def keyscope_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "keyscope"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "keyscope"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], core: int) -> tuple[list[str], object]:
    """``taskset -c CORE cmd`` as a user would type it; without taskset, the same affinity set before exec."""
    if shutil.which("taskset"):
        return ["taskset", "-c", str(core), *cmd], None
    return cmd, (lambda: os.sched_setaffinity(0, {core}))


class Exporter:
    """One `keyscope exporter` child: start (timed to /healthz), scrape, CPU and RSS from /proc, SIGTERM."""

    def __init__(self, bs: str, topic: str, core: int, *extra: str):
        self.port = free_port()
        cmd, pre = pinned(keyscope_cmd() + ["exporter", "-b", bs, "-t", topic, "--listen", f"127.0.0.1:{self.port}",
                                            *extra], core)
        self.cmd = cmd
        t = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pre)
        self.pid = self._exporter_pid()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"keyscope exporter exited {self.proc.returncode}: {self.proc.stderr.read().decode()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("keyscope exporter not ready after 60 s")
            time.sleep(0.05)
        self.start_s = time.perf_counter() - t

    def _exporter_pid(self) -> int:
        # taskset execs the command in place: the pid is the exporter's
        return self.proc.pid

    def metrics(self) -> dict:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            text = r.read().decode()
        out: dict = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def records(self) -> int:
        return int(sum(v for _, v in self.metrics().get("keyscope_partition_records_total", [])))

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> dict:
        """SIGTERM; the exit code and the child's own rusage (all its CPU, peak RSS)."""
        import signal

        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        err = self.proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0 or "Traceback" in err:
            raise SystemExit(f"keyscope exporter exited {self.proc.returncode} on SIGTERM: {err[-500:]}")
        return {"exit": self.proc.returncode, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


class Producer:
    """confluent-kafka, murmur2 (Java's partitioner), batched; ``run(rate, seconds)`` paces itself every 1,000 records."""

    def __init__(self, bs: str, topic: str, keys):
        from confluent_kafka import Producer as P

        self.topic = topic
        self.p = P({"bootstrap.servers": bs, "linger.ms": 20, "batch.num.messages": 10000,
                    "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random", "acks": 1})
        self.keys = keys  # i -> key bytes
        self.i = 0
        self.value = b'{"tenant":"t1","payload":"' + b"x" * 32 + b'","n":0000000}'

    def run(self, rate: float | None, seconds: float | None = None, count: int | None = None) -> tuple[int, float]:
        """Produce at ``rate`` records/s (None: as fast as it goes) for ``seconds`` or ``count`` records; flushes.
        Returns (records, seconds until all were acknowledged)."""
        p, keys, topic, value = self.p, self.keys, self.topic, self.value
        t0 = time.perf_counter()
        n = 0
        while True:
            el = time.perf_counter() - t0
            if (seconds is not None and el >= seconds) or (count is not None and n >= count):
                break
            if rate is not None and n > rate * el:
                time.sleep(min(0.01, n / rate - el))
                continue
            for _ in range(1000 if count is None else min(1000, count - n)):
                while True:
                    try:
                        p.produce(topic, key=keys(self.i), value=value)
                        break
                    except BufferError:
                        p.poll(0.01)
                self.i += 1
                n += 1
            p.poll(0)
        assert p.flush(120) == 0, "producer could not deliver"
        return n, time.perf_counter() - t0


def zipf_keys(distinct: int = 100_000):
    """Every 10th record the hot key, the rest Zipf-ish over ``distinct`` keys (a fixed permutation, cheap)."""
    import numpy as np

    rng = np.random.default_rng(16)
    ranks = (rng.zipf(1.2, 1 << 20) % distinct).tolist()
    names = [b"user-%d" % r for r in range(distinct)]
    mask = (1 << 20) - 1
    return lambda i: HOT if i % 10 == 0 else names[ranks[i & mask]]


def create_topic(bs: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bs})
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(timeout=30)


def wait_read(exp: Exporter, want: int, timeout: float) -> tuple[int, float]:
    """Poll until the exporter has read ``want`` records (or timeout): (read, seconds waited)."""
    t = time.perf_counter()
    while True:
        got = exp.records()
        if got >= want or time.perf_counter() - t > timeout:
            return got, time.perf_counter() - t
        time.sleep(0.1)


def throughput(bs: str, quick: bool, cores: list[int]) -> tuple[list[dict], dict]:
    topic = "bench-exporter"
    create_topic(bs, topic)
    exp = Exporter(bs, topic, cores[0])
    prod = Producer(bs, topic, zipf_keys())
    rows = []
    rates = [20_000, 80_000, None] if quick else [25_000, 50_000, 100_000, 200_000, 400_000, None]
    secs = 4.0 if quick else 20.0
    produced = 0
    prod.run(5_000, 1.0)  # warm: the exporter's first chunks compile nothing, but its first fetches open connections
    produced = prod.i
    wait_read(exp, produced, 30)
    for rate in rates:
        r0, c0, t0 = exp.records(), exp.cpu_s(), time.perf_counter()
        n, took = prod.run(rate, secs)
        produced += n
        got, waited = wait_read(exp, produced, 2.0)  # records are fetched up to 200 ms after they land
        kept = got >= produced
        if not kept:
            got, waited = wait_read(exp, produced, 120)  # the time it needs to read the step's records
        t1, c1 = time.perf_counter(), exp.cpu_s()
        read_rate = (got - r0) / (t1 - t0)
        rows.append(dict(step="paced" if rate else "unpaced", target_rate=rate, produced=n, produce_rate=n / took,
                         read=got - r0, read_rate=read_rate, ratio=read_rate / (n / took), kept_up=kept,
                         behind_s=(t1 - t0) - took, cpu_s=c1 - c0,
                         cpu_s_per_100k=(c1 - c0) / ((got - r0) / 1e5) if got > r0 else None,
                         cores_busy=(c1 - c0) / (t1 - t0), rss_mb=exp.rss_mb()))
    # catch-up: a backlog produced while the exporter is stopped, then its read rate alone
    import signal

    backlog = 300_000 if quick else 3_000_000
    os.kill(exp.pid, signal.SIGSTOP)
    try:
        n, took = prod.run(None, count=backlog)
    finally:
        os.kill(exp.pid, signal.SIGCONT)
    produced += n
    c0, t0 = exp.cpu_s(), time.perf_counter()
    r0 = produced - n
    got, waited = wait_read(exp, produced, 300)
    c1 = exp.cpu_s()
    rows.append(dict(step="catch-up", target_rate=None, produced=n, produce_rate=n / took, read=got - r0,
                     read_rate=(got - r0) / waited, ratio=((got - r0) / waited) / (n / took), kept_up=got >= produced,
                     behind_s=None, cpu_s=c1 - c0, cpu_s_per_100k=(c1 - c0) / ((got - r0) / 1e5),
                     cores_busy=(c1 - c0) / waited, rss_mb=exp.rss_mb()))
    info = dict(start_s=exp.start_s, command=" ".join(exp.cmd), produced=produced)
    info.update(exp.stop())
    info["cpu_s_per_100k_whole_run"] = info["cpu_s"] / (produced / 1e5)
    return rows, info


def memory(bs: str, quick: bool, cores: list[int]) -> dict:
    topic = "bench-exporter-mem"
    create_topic(bs, topic)
    distinct = 200_000 if quick else 1_000_000
    seconds = 8.0 if quick else 300.0
    # --quick: the window holds the whole run, so the hot share is exactly 0.2 of what was read.  With a window
    # of a few seconds the check is noise: records land in buckets by when they were read, and a lagging
    # exporter reads the busiest partition (1 MB per fetch) later than the others (0.233 vs 0.2 seen at 4 s).
    window = "30s" if quick else "1m"
    every = 1.0 if quick else 10.0
    rate = 20_000 if quick else 30_000
    top_k = 10
    exp = Exporter(bs, topic, cores[0], "--window", window, "--top-k", str(top_k))
    # 2 of every 10 records the hot key (exactly 20% of any 10 in a row); the rest cycle through `distinct` keys
    names = [b"user-%07d" % ((j * 7919) % distinct) for j in range(distinct)]
    prod = Producer(bs, topic, lambda i: HOT if i % 10 < 2 else names[(8 * (i // 10) + i % 10 - 2) % distinct])
    samples = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        prod.run(rate, every)
        m = exp.metrics()
        samples.append(dict(t=round(time.perf_counter() - t0, 1), rss_mb=exp.rss_mb(), produced=prod.i,
                            read=int(sum(v for _, v in m.get("keyscope_partition_records_total", []))),
                            hot_series=len(m.get("keyscope_hot_key_share", [])) + len(m.get("keyscope_hot_key_topic_share", []))))
    wait_read(exp, prod.i, 60)
    m = exp.metrics()
    share = [v for lab, v in m.get("keyscope_hot_key_topic_share", []) if lab["key"] == HOT.decode()]
    err = [v for _, v in m.get("keyscope_hot_key_share_error", [])]
    out = dict(seconds=seconds, distinct_keys=min(distinct, prod.i * 8 // 10), produced=prod.i, window=window, top_k=top_k,
               samples=samples, hot_share=share[0] if share else None, true_share=0.2,
               share_error_bound=err[0] if err else None,
               max_hot_series=max(s["hot_series"] for s in samples), series_cap=2 * top_k)
    # + 0.002: the window's edge falls at slightly different records in each partition (read at different moments)
    out["share_within_bound"] = (out["hot_share"] is not None and out["share_error_bound"] is not None
                                 and abs(out["hot_share"] - 0.2) <= out["share_error_bound"] + 0.002)
    half = [s["rss_mb"] for s in samples if s["t"] >= seconds / 3]
    out["rss_first_third_mb"] = max([s["rss_mb"] for s in samples if s["t"] < seconds / 3] or [0.0])
    out["rss_after_mb"] = [min(half), max(half)] if half else None
    out.update({f"final_{k}": v for k, v in exp.stop().items()})
    return out


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--no-memory", action="store_true", help="skip the memory run")
    args = ap.parse_args(argv)
    from tests.kafka.cluster import KafkaCluster

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # the producer (this process) off the exporter's core
        os.sched_setaffinity(0, set(cores[1:]))
    load_start = os.getloadavg()
    t = time.perf_counter()
    with KafkaCluster(1, heap="1g") as kafka:
        bs = kafka.bootstrap_server
        rows, info = throughput(bs, args.quick, cores)
        mem = None if args.no_memory else memory(bs, args.quick, cores)
    load_end = os.getloadavg()
    table = []
    for r in rows:
        what = {"paced": f"paced {r['target_rate'] or 0:,}/s", "unpaced": "unpaced producer",
                "catch-up": "catch-up (backlog)"}[r["step"]]
        table.append([what, f"{r['produce_rate']:,.0f}", f"{r['read_rate']:,.0f}", f"{r['ratio']:.2f}x",
                      "yes" if r["kept_up"] else "no", "-" if r["behind_s"] is None else f"{r['behind_s']:.1f}",
                      "-" if r["cpu_s_per_100k"] is None else f"{r['cpu_s_per_100k']:.2f}",
                      f"{r['cores_busy']:.2f}", f"{r['rss_mb']:.0f}"])
    print_table(f"keyscope exporter on one core (core {cores[0]}) vs the topic's produce rate "
                f"({'--quick, ' if args.quick else ''}Apache Kafka 4.4, {PARTITIONS} partitions; ratio = read / produced records/s)",
                ["step", "produced rec/s", "read rec/s", "ratio", "kept up", "behind s", "CPU s / 100k rec", "cores", "RSS MB"],
                table)
    paced_ok = [r["produce_rate"] for r in rows if r["step"] != "catch-up" and r["kept_up"]]
    catch = [r for r in rows if r["step"] == "catch-up"][0]
    summary = dict(kept_up_with_rec_s=max(paced_ok) if paced_ok else 0.0, ceiling_rec_s=catch["read_rate"],
                   cpu_s_per_100k=catch["cpu_s_per_100k"], start_s=info["start_s"],
                   one_core_cpu_bound_rec_s=1e5 / catch["cpu_s_per_100k"] if catch["cpu_s_per_100k"] else None)
    print(f"kept up with {summary['kept_up_with_rec_s']:,.0f} records/s produced; catch-up read "
          f"{summary['ceiling_rec_s']:,.0f} records/s at {summary['cpu_s_per_100k']:.2f} CPU s per 100k records "
          f"({catch['cores_busy']:.2f} of its core busy; a whole core would be "
          f"{summary['one_core_cpu_bound_rec_s'] or 0:,.0f} records/s); "
          f"cold start to /healthz {info['start_s']:.2f} s; whole run {info['cpu_s_per_100k_whole_run']:.2f} CPU s "
          f"per 100k records, peak RSS {info['peak_rss_mb']:.0f} MB (wait4)")
    print(f"command: {info['command']}")
    if mem:
        print_table(f"Memory: {mem['distinct_keys']:,} distinct keys over {mem['seconds']:.0f} s, --window {mem['window']}",
                    ["t s", "produced", "read", "RSS MB", "hot-key series"],
                    [[s["t"], s["produced"], s["read"], f"{s['rss_mb']:.0f}", s["hot_series"]] for s in mem["samples"]])
        print(f"RSS first third max {mem['rss_first_third_mb']:.0f} MB, after: {mem['rss_after_mb'][0]:.0f}-"
              f"{mem['rss_after_mb'][1]:.0f} MB; hot-key series max {mem['max_hot_series']} (cap {mem['series_cap']}); "
              f"hot share {mem['hot_share']:.4f} vs 0.2000 (bound {mem['share_error_bound']:.4f}): "
              f"{'within' if mem['share_within_bound'] else 'OUTSIDE'}")
    print(f"load average: start {load_start[0]:.2f}, end {load_end[0]:.2f}; {time.perf_counter() - t:.0f} s in all")
    write_json(args.json, "exporter", rows, quick=args.quick, summary=summary, run=info, memory=mem,
               loadavg_start=list(load_start), loadavg_end=list(load_end), seconds=time.perf_counter() - t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
