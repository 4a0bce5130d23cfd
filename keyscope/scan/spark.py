"""``keyscope scan --spark MASTER``: the same profile from a PySpark job over Spark's own Kafka source.

Where a team runs Spark, the records are read by Spark's batch Kafka source
(``spark-sql-kafka-0-10``, from Maven Central): the profile's range as
``startingOffsets``/``endingOffsets`` per partition, ``minPartitions`` as
many as the plan (:func:`keyscope.scan.plan.plan_tasks`) would make, so a
big partition is split into more Spark tasks.  Each Spark partition holds
one offset range of one Kafka partition; ``mapInArrow`` counts its records
with the task's own counting code (:func:`keyscope.scan.task.count_tables`)
into a one-task profile, keyed by the Spark partition id; the driver
collects them and merges in id order.  Spark retries a failed task itself
and keeps one result per partition, so nothing is counted twice.

Read-only: the batch source assigns partitions (no group, no commit) and
never creates topics.  The executors need keyscope installed, as Dask's
workers do.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import threading
import time
from typing import Callable

from ..errors import KafkaError, UsageError
from .engine import PROGRESS_S, ScanProgress, ScanRequest, ScanResult, cores, resolve_ranges
from .plan import Task, plan_tasks
from .profile import PartitionStats, Profile, merge
from .task import PARTITION_FETCH_BYTES, ScanSpec, count_tables

CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"
ARROW_BATCH = 50_000  # records per Arrow batch handed to Python (Spark's default is 10,000)
INSTALL = "pip install 'keyscope[spark]'"

__all__ = ["run_spark", "check_options", "check_pyspark", "CONNECTOR"]


class SparkError(KafkaError):
    """The Spark job failed (the connector missing, executors unreachable, a task failing Spark's retries): exit 4."""


def check_options(master: str, workers, dask) -> None:
    """``--spark`` with another engine, an empty master or no pyspark: UsageError (exit 2), before any broker is asked."""
    if dask is not None:
        raise UsageError("--spark and --dask choose two engines: give one")
    if workers is not None:
        raise UsageError("--spark runs on Spark's executors: --workers is for local processes (size the Spark job "
                         "with --tasks or the master, e.g. local[4])")
    if not master.strip():
        raise UsageError("--spark needs a master URL, e.g. local[2] or spark://host:7077")
    check_pyspark()


def check_pyspark() -> None:
    """UsageError (exit 2) when pyspark is not installed: before any broker is asked anything."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise UsageError(f"--spark needs pyspark: {INSTALL}") from None


def _session(master: str, topic: str):
    """A SparkSession for ``master``.  The connector: ``KEYSCOPE_SPARK_JARS`` (comma-separated jar paths,
    as spark.jars) if set, else ``spark.jars.packages`` resolved by Spark from Maven Central at the
    installed pyspark's version (the connector must match its Spark)."""
    import pyspark
    from pyspark.sql import SparkSession

    if master.startswith("local"):  # Python workers on this machine: this interpreter, which has keyscope
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    b = (SparkSession.builder.master(master).appName(f"keyscope scan {topic}")
         .config("spark.ui.showConsoleProgress", "false"))  # the scan draws its own progress line on stderr
    jars = os.environ.get("KEYSCOPE_SPARK_JARS")
    if jars:
        b = b.config("spark.jars", jars)
    else:
        b = b.config("spark.jars.packages", f"{CONNECTOR}:{pyspark.__version__.split('+')[0]}")
    try:
        session = b.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")  # Spark's WARN lines would bury the scan's own on stderr
        return session
    except Exception as e:  # no JVM, a master that does not answer: Py4J and Spark raise their own types
        raise UsageError(f"--spark {master}: cannot start a Spark session ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


# Java login modules for the mechanisms whose settings travel as a JAAS line (the jaas config holds the password:
# Spark's options are never logged or shown, and spark.sql.redaction.options.regex masks them in plans).
LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"}
REDACT = r"(?i)url|jaas|password|secret|token|ssl\.keystore\.key|ssl\.truststore\.certificates"
# Settings Spark's executors cannot be handed as Kafka properties alone (each needs a jar or a file on
# every executor, or a JVM system property): refused, naming the setting.
_UNMAPPED = {"AWS_MSK_IAM": "sasl.mechanism=AWS_MSK_IAM (the aws-msk-iam-auth jar on every executor)",
             "GSSAPI": "sasl.mechanism=GSSAPI (a keytab or ticket cache on every executor)"}


def _jaas_value(v: str) -> str:
    """A JAAS option value, quoted as Kafka's JaasConfig parser (a StreamTokenizer) reads it."""
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kafka_options(conn, isolation: str) -> dict[str, str]:
    """The Kafka source's options for ``conn``: the keyscope connection as Java client properties.

    TLS material travels inline as PEM (``kafka.ssl.truststore.certificates``, ``kafka.ssl.keystore.key``),
    read from the same files keyscope reads, so executors need none of the driver's files.  What cannot be
    mapped is a UsageError (exit 2) naming the setting, before any broker is asked.
    """
    opts = {"kafka.bootstrap.servers": conn.bootstrap_servers, "kafka.isolation.level": isolation,
            # gaps (transaction markers, compaction, retention) are normal in a range read by offset
            "failOnDataLoss": "false",
            "kafka.allow.auto.create.topics": "false",  # read-only: a metadata request never creates the topic
            # the fetch size keyscope's own tasks use (the client's default is 1 MiB): Spark's reader alone,
            # 500k records on a warm local[2], 12.6 s -> 6.3 s (one run each, load ~5)
            "kafka.max.partition.fetch.bytes": str(PARTITION_FETCH_BYTES)}
    for kw, prop in (("client_id", "client.id"), ("request_timeout_ms", "request.timeout.ms")):
        if kw in conn.kwargs:
            opts[f"kafka.{prop}"] = str(conn.kwargs[kw])
    protocol = conn.protocol
    if protocol == "PLAINTEXT":
        return opts
    opts["kafka.security.protocol"] = protocol
    if protocol.endswith("SSL"):
        from ..kafka.tls import pem_material

        trust, chain, key = pem_material(conn.tls)
        if trust is not None:
            opts["kafka.ssl.truststore.type"] = "PEM"
            opts["kafka.ssl.truststore.certificates"] = trust
        if chain is not None and key is not None:
            opts["kafka.ssl.keystore.type"] = "PEM"
            opts["kafka.ssl.keystore.certificate.chain"] = chain
            opts["kafka.ssl.keystore.key"] = key
        # Java's default is https, as keyscope's: the broker's certificate must name the host; empty: off
        opts["kafka.ssl.endpoint.identification.algorithm"] = conn.tls.get(
            "ssl.endpoint.identification.algorithm", "https").strip()
    if protocol.startswith("SASL_"):
        mech = conn.mechanism or ""
        if mech in _UNMAPPED:
            raise UsageError(f"--spark cannot hand {_UNMAPPED[mech]} to Spark's executors; use --workers or --dask")
        if conn.sasl.get("sasl.oauthbearer.token.endpoint.url"):
            raise UsageError("--spark cannot use sasl.oauthbearer.token.endpoint.url (Java's client needs it allowed "
                             "by a system property on every executor); use --workers or --dask")
        if mech == "OAUTHBEARER":  # the unsecured login (test clusters): Java's default callback makes the token
            jaas = conn.sasl
        else:
            jaas = {"username": conn.kwargs["sasl_plain_username"], "password": conn.kwargs["sasl_plain_password"]}
        opts["kafka.sasl.mechanism"] = mech
        opts["kafka.sasl.jaas.config"] = (f"{LOGIN_MODULES[mech]} required "
                                          + " ".join(f"{k}={_jaas_value(v)}" for k, v in jaas.items()) + ";")
    return opts


def run_spark(conn, req: ScanRequest, spark, progress: Callable[[ScanProgress], None] | None = None) -> ScanResult:
    """Plan, run on Spark and merge.  ``spark``: a master URL (``local[2]``, ``spark://host:7077``; the
    session is started and stopped here, unless this process already has an active one, which is used
    and left running) or a SparkSession (tests: one per module)."""
    check_pyspark()
    t0 = time.monotonic()
    from ..model.limits import check_count

    if req.partitions_max < 1:
        raise UsageError(f"--partitions-max must be at least 1, got {req.partitions_max}")
    check_count(req.partitions_max, "--partitions-max")
    options = _kafka_options(conn, req.isolation)
    n_parts, ranges = resolve_ranges(conn, req)
    if isinstance(spark, str):
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()  # keyscope called inside a Spark driver: its session, left running
        own = active is None
        session = _session(spark, req.topic) if own else active
    else:
        own, session = False, spark
    try:
        workers = req.workers or session.sparkContext.defaultParallelism or cores()
        wanted = len(plan_tasks(ranges, workers=workers, tasks=req.tasks))
        spec = ScanSpec(req.topic, n_parts, req.partitions_max, tuple(req.key_by), tuple(req.fields), req.separator,
                        tuple(req.counter_rules), req.isolation, 0)
        partial = False
        try:
            results, planned = _run(session, options, spec, ranges, wanted, progress, t0)
        except _Interrupted as stopped:  # Ctrl-C after some Spark tasks completed: their profile, marked partial
            results, planned, partial = stopped.results, stopped.planned, True
    except Exception as e:
        if not type(e).__module__.startswith(("pyspark", "py4j")):
            raise
        hint = ""
        if "data source" in str(e).lower() and "kafka" in str(e).lower():
            hint = f" (Spark's Kafka connector is missing: {CONNECTOR} in spark.jars.packages, or KEYSCOPE_SPARK_JARS)"
        why = _kafka_cause(e) or _first_line(e)
        raise SparkError(f"the Spark job failed: {_masked(why, conn, options)}{hint}") from None
    finally:
        if own:
            session.stop()
    profile = merge(results) if results else _empty(spec)
    profile.tasks_planned = planned
    for p in range(n_parts):  # partitions with nothing in range show as zeros
        profile.partitions.setdefault(p, PartitionStats())
    profile.partitions = dict(sorted(profile.partitions.items()))
    profile.range = {str(p): list(r) for p, r in sorted(ranges.items())} | {
        "from": req.start.text or req.start.kind, "to": req.stop.text or req.stop.kind}
    return ScanResult(profile, partial, time.monotonic() - t0, 0, "spark")


def _kafka_cause(e: BaseException) -> str | None:
    """The innermost Kafka client exception under a Spark/Py4J error ("SaslAuthenticationException: ..."):
    Py4J's own first line only names the JVM call that failed."""
    t = getattr(e, "java_exception", None) or getattr(e, "_origin", None)
    found = None
    try:
        for _ in range(30):  # a cause chain, not a cycle
            if t is None:
                break
            name = str(t.getClass().getName())
            if name.startswith("org.apache.kafka.common"):
                found = f"{name.rsplit('.', 1)[-1]}: {t.getMessage()}"
            t = t.getCause()
    except Exception:  # noqa: BLE001 - the gateway gone: Py4J's line is what is left
        return found
    return _first_line(RuntimeError(found)) if found else None


def _masked(text: str, conn, options: dict) -> str:
    """``text`` with every secret the connection or the Spark options hold as ``***`` (a Java exception may
    quote a configuration value)."""
    import re

    secrets = set(conn.secrets()) | {v for k, v in options.items() if re.search(REDACT, k)}
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def _empty(spec: ScanSpec) -> Profile:
    p = count_tables(spec, Task(-1, 0, 0, 0), [])
    p.tasks_done, p.partitions = set(), {}
    return p


def _run(session, options: dict, spec: ScanSpec, ranges: dict, wanted: int, progress, t0: float):
    """(one-task profiles, Spark partitions planned) for the non-empty ranges."""
    import json

    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType, IntegerType, StructField, StructType

    live = {p: r for p, r in ranges.items() if r[1] > r[0]}
    if not live:
        return [], 0
    reader = session.read.format("kafka")
    for k, v in options.items():
        reader = reader.option(k, v)
    topic = spec.topic
    headers = [f for f in spec.fields if f.header is not None]
    df = (reader.option("assign", json.dumps({topic: sorted(live)}))
          .option("startingOffsets", json.dumps({topic: {str(p): a for p, (a, _) in live.items()}}))
          .option("endingOffsets", json.dumps({topic: {str(p): b for p, (_, b) in live.items()}}))
          .option("minPartitions", str(max(wanted, len(live))))
          .option("includeHeaders", "true" if headers else "false")
          .load())
    cols = [F.col("partition").cast("int").alias("partition"), F.col("offset"), F.col("timestamp"), F.col("key"),
            F.length("key").cast("int").alias("key_size"),
            F.coalesce(F.length("value"), F.lit(0)).cast("int").alias("value_size")]
    if any(f.header is None for f in spec.fields):
        cols.append(F.col("value"))
    for i, f in enumerate(headers):  # the last header of a name wins, as the decoder (and Java's lastHeader())
        same = F.filter("headers", _named(f.header))
        cols.append(F.try_element_at(same, F.lit(-1)).getField("value").alias(f"_h{i}"))
    df = df.select(*cols)
    planned = df.rdd.getNumPartitions()
    spec = dataclasses.replace(spec, tasks_planned=planned)
    sc = session.sparkContext
    done = {k: sc.accumulator(0) for k in ("tasks", "records", "bytes", "offsets")}
    # Each completed Spark task's profile also reaches the driver as an accumulator update, so Ctrl-C
    # (which cancels the job before collect() returns anything) still keeps the tasks that completed.
    kept = sc.accumulator({}, _kept_param())
    done["kept"] = kept
    schema = StructType([StructField("task", IntegerType()), StructField("profile", BinaryType())])
    confs = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH),
             "spark.sql.redaction.options.regex": REDACT}  # the jaas config and the key out of any plan shown
    old = {k: session.conf.get(k, None) for k in confs}
    for k, v in confs.items():
        session.conf.set(k, v)
    stop = threading.Event()
    total = sum(b - a for a, b in live.values())
    if progress is not None:
        def watch() -> None:  # the accumulators advance per completed Spark task
            while not stop.wait(PROGRESS_S):
                progress(ScanProgress(min(total, done["offsets"].value), total, done["records"].value,
                                      done["bytes"].value, done["tasks"].value, planned, time.monotonic() - t0))

        threading.Thread(target=watch, name="keyscope-spark-progress", daemon=True).start()
    # collect() runs on a thread of its own: a KeyboardInterrupt landing inside py4j's socket read in the
    # main thread broke the gateway ("reentrant call inside BufferedReader"), so the session was lost and
    # cancelAllJobs could not be sent.  Here Ctrl-C lands in the main thread's wait, never inside py4j.
    job: dict = {}

    def collect() -> None:
        try:
            job["rows"] = df.mapInArrow(_Counter(spec, done), schema).collect()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            job["error"] = e

    runner = threading.Thread(target=collect, name="keyscope-spark-job", daemon=True)
    try:
        runner.start()
        while runner.is_alive():
            runner.join(0.1)
        if "error" in job:
            raise job["error"]
        rows = job["rows"]
    except KeyboardInterrupt:
        sc.cancelAllJobs()
        runner.join()  # the cancelled job fails on its thread; the accumulators hold what completed
        partial = [pickle.loads(b) for _, b in sorted(kept.value.items())]
        if not partial:
            raise
        raise _Interrupted(partial, planned) from None
    finally:
        stop.set()
        for k, v in old.items():
            if v is None:
                session.conf.unset(k)
            else:
                session.conf.set(k, v)
    results = [pickle.loads(r["profile"]) for r in rows]
    if progress is not None:
        progress(ScanProgress(total, total, sum(p.records for p in results), sum(p.bytes for p in results),
                              len(results), planned, time.monotonic() - t0))
    return results, planned


class _Interrupted(Exception):
    """Ctrl-C during the Spark job after some tasks completed: their one-task profiles."""

    def __init__(self, results: list, planned: int):
        super().__init__("interrupted")
        self.results, self.planned = results, planned


def _kept_param():
    from pyspark.accumulators import AccumulatorParam

    class KeptProfiles(AccumulatorParam):
        """{Spark partition id: pickled one-task profile}; a retried task's second copy replaces the first."""

        def zero(self, value):
            return {}

        def addInPlace(self, a, b):
            a.update(b)
            return a

    return KeptProfiles()


class _Counter:
    """The function ``mapInArrow`` runs on each Spark partition (picklable: a spec and accumulators)."""

    def __init__(self, spec: ScanSpec, done: dict):
        self.spec = spec
        self.done = done

    def __call__(self, batches):
        import pyarrow as pa
        from pyspark import TaskContext

        tid = TaskContext.get().partitionId()
        tables = (_columns(b, self.spec) for b in batches)
        first = next((t for t in tables if t.num_rows), None)
        if first is None:  # nothing in range (an aborted transaction): a task done with no records
            prof = count_tables(self.spec, Task(tid, 0, 0, 0), [])
            prof.partitions = {}
        else:
            part = first["partition"][0].as_py()

            def one_partition():
                yield first
                for t in tables:
                    if t.num_rows and (t["partition"][0].as_py() != part or t["partition"][-1].as_py() != part):
                        raise RuntimeError(f"Spark partition {tid} holds two Kafka partitions")  # not from Spark's source
                    yield t

            prof = count_tables(self.spec, Task(tid, part, 0, 0), one_partition())
        s = next(iter(prof.partitions.values()), PartitionStats())
        blob = pickle.dumps(prof)
        if "kept" in self.done:
            self.done["kept"].add({tid: blob})
        self.done["tasks"].add(1)
        self.done["records"].add(s.records)
        self.done["bytes"].add(s.bytes)
        self.done["offsets"].add(0 if s.first_offset is None else s.last_offset - s.first_offset + 1)
        yield pa.RecordBatch.from_pydict({"task": [tid], "profile": [blob]},
                                         schema=pa.schema([("task", pa.int32()), ("profile", pa.binary())]))


def _named(name: str):
    """``headers`` element -> whether its key is ``name`` (one argument: Spark reads a second as the index)."""
    from pyspark.sql import functions as F

    return lambda h: h.getField("key") == F.lit(name)


def _columns(batch, spec: ScanSpec):
    """Spark's Kafka columns as the decoder's (:func:`keyscope.sampling._to_arrow`): timestamps in ms, none
    before 1970 or past the decoder's limit; fields as text, null where not valid UTF-8."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..sampling.options import MAX_TIMESTAMP_MS

    ms = pc.cast(pc.cast(batch.column("timestamp"), pa.timestamp("us", tz="UTC")), pa.int64())
    ms = pc.divide(ms, 1000)
    bad = pc.or_(pc.less(ms, 0), pc.greater(ms, MAX_TIMESTAMP_MS))
    ts = pc.cast(pc.if_else(bad, pa.scalar(None, pa.int64()), ms), pa.timestamp("ms", tz="UTC"))
    arrays = {"partition": batch.column("partition"), "offset": batch.column("offset"), "timestamp": ts,
              "key": batch.column("key"), "key_size": batch.column("key_size"), "value_size": batch.column("value_size")}
    json_fields = [f for f in spec.fields if f.header is None]
    if json_fields:
        import polars as pl

        text = pl.from_arrow(_text(batch.column("value")))
        for f in json_fields:
            arrays[f.name] = text.str.json_path_match(f.path).to_arrow()
    for i, f in enumerate(f for f in spec.fields if f.header is not None):
        arrays[f.name] = _text(batch.column(f"_h{i}"))
    return pa.table(arrays)


def _text(arr):
    """Binary as large_string; a value that is not valid UTF-8 becomes null (as the decoder's fields)."""
    import pyarrow as pa

    try:
        return arr.cast(pa.large_string())
    except (pa.ArrowInvalid, UnicodeDecodeError):  # rare: one bad value; decode one by one
        def utf8(b):
            try:
                return None if b is None else b.decode("utf-8")
            except UnicodeDecodeError:
                return None

        return pa.array([utf8(b) for b in arr.to_pylist()], pa.large_string())
