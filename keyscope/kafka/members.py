"""Who is in a consumer group and which partitions each member owns, read without joining it.

Why its own module: ``keyscope lag`` names the member (client id, host,
member id) that owns the hot partition, and the broker answers that question
in two ways:

- **classic** groups (JoinGroup/SyncGroup, every client before KIP-848):
  DescribeGroups, whose member assignment is the client's own
  ConsumerProtocol bytes (range, round-robin, sticky, cooperative-sticky all
  write them the same way).
- **consumer** groups (KIP-848, ``group.protocol=consumer``; Kafka 4 default
  for the Java client when asked): the broker assigns, and DescribeGroups v6
  answers ``GROUP_ID_NOT_FOUND: ... is not a classic group``.  Their members
  come from ConsumerGroupDescribe (API 69), which kafka-python 3.0 does not
  ship: its schema is in :mod:`keyscope.kafka._messages`, sent on the admin
  client's own connection to the group coordinator.

Both are Describe requests: nothing here joins, syncs, heartbeats or commits.
When neither answer is usable (an old broker, Tansu's empty assignments),
the members still count and are named, with owners unknown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Member", "GroupMembers", "describe", "owners_of", "to_dict", "retry_coordinator"]

UNSUPPORTED_VERSION = 35
_RETRIABLE_COORDINATOR_ERRORS = (14, 15, 16)  # load in progress, not available, not coordinator


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str  # as the broker saw the connection; Java's leading '/' removed
    instance_id: str | None  # group.instance.id (static membership)
    assignment: dict[str, tuple[int, ...]]  # topic -> partitions this member owns now

    def owns(self, topic: str, partition: int) -> bool:
        return partition in self.assignment.get(topic, ())


@dataclass(frozen=True)
class GroupMembers:
    """A group's members as the broker describes them."""

    protocol: str | None  # "classic" | "consumer"; None when the broker would not say
    state: str | None
    assignor: str | None  # classic: the protocol the members agreed on; consumer: the broker's assignor
    members: list[Member] = field(default_factory=list)
    error: str | None = None  # why the members are unknown (then ``members`` is empty and ``count`` None)
    assignments_known: bool = True  # False: the broker named the members but not what they own
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int | None:
        return None if self.error is not None else len(self.members)


def owners_of(gm: GroupMembers | None, topic: str, partition: int) -> list[Member]:
    """Members owning ``topic``/``partition`` (normally one; none while unassigned or unknown)."""
    if gm is None:
        return []
    return [m for m in gm.members if m.owns(topic, partition)]


def _host(h: str | None) -> str:
    return (h or "").lstrip("/")


def describe(admin, group: str) -> GroupMembers:
    """Describe ``group``: DescribeGroups, then ConsumerGroupDescribe for a KIP-848 group."""
    try:
        d = admin.describe_groups([group]).get(group)
    except Exception as e:
        return GroupMembers(None, None, None, error=f"DescribeGroups failed: {_one_line(e)}")
    if not d:
        return GroupMembers(None, None, None, error="DescribeGroups returned nothing for the group")
    err = d.get("error")
    if err and ("not a classic group" in err or "GroupIdNotFound" in err):
        got = _consumer_group_describe(admin, group)
        if got is not None:
            return got
    if err:
        return GroupMembers(None, d.get("group_state") or None, None, error=f"DescribeGroups: {err}")
    return _classic(d)


def _classic(d: dict) -> GroupMembers:
    members, known = [], True
    for m in d.get("members") or []:
        a = m.get("member_assignment")
        assignment: dict[str, tuple[int, ...]] = {}
        if isinstance(a, dict):
            for tp in a.get("assigned_partitions") or []:
                assignment[tp["topic"]] = tuple(sorted(tp["partitions"]))
        else:  # not the consumer protocol's bytes (Connect, Streams internals) or a rebalance in progress
            known = False
        members.append(Member(
            member_id=m.get("member_id") or "",
            client_id=m.get("client_id") or "",
            host=_host(m.get("client_host")),
            instance_id=m.get("group_instance_id"),
            assignment=assignment,
        ))
    state = d.get("group_state") or None
    notes = []
    if members and state in ("PreparingRebalance", "CompletingRebalance"):
        notes.append(f"the group is rebalancing ({state}): partition owners may change in a moment")
    if members and not any(m.assignment for m in members):
        known = False
    members.sort(key=lambda m: (m.client_id, m.member_id))
    return GroupMembers("classic", state, d.get("protocol_data") or None, members,
                        assignments_known=known, notes=notes)


_CGD = None


def _messages():
    """ConsumerGroupDescribe request/response classes, built once from our schemas."""
    global _CGD
    if _CGD is None:
        from kafka.protocol.api_message import ApiMessage

        from . import _messages as pkg

        class ConsumerGroupDescribeRequest(ApiMessage, load_json=pkg):
            pass

        class ConsumerGroupDescribeResponse(ApiMessage, load_json=pkg):
            pass

        _CGD = (ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse)
    return _CGD


def _consumer_group_describe(admin, group: str) -> GroupMembers | None:
    """ConsumerGroupDescribe (API 69) at the coordinator; None when the broker does not have it."""
    try:
        req_cls, _ = _messages()
    except Exception:  # a kafka-python without the generated-message machinery: no KIP-848 details
        return None
    manager = admin._manager

    async def ask():
        coordinator = await admin._find_coordinator_id(group)
        return await manager.send(req_cls(group_ids=[group], include_authorized_operations=False),
                                  node_id=coordinator)

    try:
        resp = manager.run(ask)
    except Exception as e:
        name = type(e).__name__
        if "Incompatible" in name or "UnsupportedVersion" in name:
            return None
        return GroupMembers("consumer", None, None, error=f"ConsumerGroupDescribe failed: {_one_line(e)}")
    for g in resp.groups:
        if g.group_id != group:
            continue
        if g.error_code:
            from .client import error_name

            if g.error_code == UNSUPPORTED_VERSION:
                return None
            msg = f": {g.error_message}" if g.error_message else ""
            return GroupMembers("consumer", g.group_state or None, None,
                                error=f"ConsumerGroupDescribe: {error_name(g.error_code)}{msg}")
        members, notes = [], []
        for m in g.members:
            cur = {tp.topic_name: tuple(sorted(tp.partitions)) for tp in m.assignment.topic_partitions}
            target = {tp.topic_name: tuple(sorted(tp.partitions)) for tp in m.target_assignment.topic_partitions}
            if {k: v for k, v in cur.items() if v} != {k: v for k, v in target.items() if v}:
                notes.append(f"member {m.client_id} ({m.member_id}) is still reconciling: it owns "
                             f"{_fmt(cur)} and is being given {_fmt(target)}")
            members.append(Member(member_id=m.member_id, client_id=m.client_id, host=_host(m.client_host),
                                  instance_id=m.instance_id, assignment={k: v for k, v in cur.items() if v}))
        members.sort(key=lambda m: (m.client_id, m.member_id))
        return GroupMembers("consumer", g.group_state or None, g.assignor_name or None, members, notes=notes)
    return GroupMembers("consumer", None, None, error="ConsumerGroupDescribe did not answer for the group")


def _fmt(a: dict[str, tuple[int, ...]]) -> str:
    parts = [f"{t}[{','.join(map(str, ps))}]" for t, ps in sorted(a.items()) if ps]
    return " ".join(parts) or "nothing"


# After a coordinator moves, how long an empty answer from the new one is asked again (see below).
MOVED_SETTLE_S = 10.0


def retry_coordinator(admin, group: str, call, what: str, timeout_s: float, empty=None):
    """Run ``call()`` until it succeeds or ``timeout_s`` passes, while the group coordinator is unreachable.

    A dead broker that coordinated the group keeps being named coordinator
    until the controller fences it (broker.session.timeout.ms, 9 s by
    default), then another broker takes the group over: a read a few seconds
    later, after asking FindCoordinator again, succeeds.  Returns ``call()``'s value or raises KafkaError with one line.

    ``empty(result)``: the new coordinator can answer before it serves the
    group's offsets (seen on Kafka 4.4, 3 brokers: one OffsetFetch right after
    the move came back with no offsets, the next ones with all of them), so
    an empty answer after a move is asked again for up to MOVED_SETTLE_S.
    """
    from ..errors import KafkaError

    deadline = time.monotonic() + timeout_s
    moved_at = None
    while True:
        try:
            result = call()
            if (moved_at is not None and empty is not None and empty(result)
                    and time.monotonic() < min(deadline, moved_at + MOVED_SETTLE_S)):
                time.sleep(0.5)
                continue
            return result
        except Exception as e:
            if not _coordinator_unreachable(e) or time.monotonic() >= deadline:
                hint = (
                    "; the group's coordinator broker is unreachable: if a broker is down, Kafka moves the "
                    "group to another broker within seconds (broker.session.timeout.ms), so retry or raise --timeout"
                    if _coordinator_unreachable(e) else ""
                )
                raise KafkaError(f"cannot read {what}: {_one_line(e)}{hint}") from None
            _forget_coordinator(admin, group)
            moved_at = moved_at or time.monotonic()
            time.sleep(0.5)


def _forget_coordinator(admin, group: str) -> None:
    """kafka-python caches a group's coordinator and never drops it when that broker dies: ask again."""
    try:
        from kafka.protocol.metadata import CoordinatorType

        admin._manager.cluster._coordinators.pop((CoordinatorType.GROUP, group), None)
    except (ImportError, AttributeError):  # pragma: no cover - guarded by the kafka-python>=3,<4 pin
        pass


def _coordinator_unreachable(e: BaseException) -> bool:
    import kafka.errors as Errors

    if isinstance(e, (Errors.KafkaConnectionError, Errors.NodeNotReadyError, Errors.KafkaTimeoutError,
                      Errors.CoordinatorNotAvailableError, Errors.NotCoordinatorError,
                      Errors.CoordinatorLoadInProgressError, ConnectionError)):
        return True
    return getattr(e, "errno", None) in _RETRIABLE_COORDINATOR_ERRORS


def to_dict(gm: GroupMembers | None) -> dict:
    """JSON fields added to ``keyscope lag``'s document (docs/lag.md)."""
    if gm is None:
        return {"group_protocol": None, "assignor": None, "group_members": None}
    return {
        "group_protocol": gm.protocol,
        "assignor": gm.assignor,
        "group_members": None if gm.error is not None else [member_dict(m) for m in gm.members],
    }


def member_dict(m: Member, with_assignment: bool = True) -> dict:
    d = {"member_id": m.member_id, "client_id": m.client_id, "host": m.host, "instance_id": m.instance_id}
    if with_assignment:
        d["assignment"] = [{"topic": t, "partitions": list(ps)} for t, ps in sorted(m.assignment.items())]
    return d


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def annotate(doc: dict, gm: GroupMembers | None) -> dict:
    """Add the members to ``keyscope lag``'s JSON document: who is in the group, who owns each partition."""
    doc.update(to_dict(gm))
    known = gm is not None and gm.error is None and gm.assignments_known
    for t in doc.get("topics", []):
        for row in t.get("partitions", []):
            owner = owners_of(gm, t["topic"], row["partition"]) if known else []
            row["owner"] = member_dict(owner[0], with_assignment=False) if owner else None
        t["hottest_partition_owners"] = [
            {"partition": h["partition"],
             "owner": next((r["owner"] for r in t["partitions"] if r["partition"] == h["partition"]), None)}
            for h in t.get("keyscope:group_hottest_partition", [])
        ]
    return doc


def describe_member(m: Member) -> str:
    """One member in words: client id, host, member id (and static instance id)."""
    text = f"client-id {m.client_id or '(none)'}, host {m.host or '?'}, member-id {m.member_id}"
    return text + (f", instance-id {m.instance_id}" if m.instance_id else "")


def summary_rows(gm: GroupMembers | None, topic: str, hottest: list[int]) -> list[list[str]]:
    """Rows for ``keyscope lag``'s per-topic summary: the protocol, who owns the hot partition, every member."""
    if gm is None or gm.error is not None:
        return []
    rows = [["group protocol", f"{gm.protocol or '?'}" + (f", assignor {gm.assignor}" if gm.assignor else "")]]
    if not gm.members:
        return rows
    if not gm.assignments_known:
        rows.append(["hottest partition owner", "unknown: the broker named the members but not their partitions"])
    else:
        for p in hottest:
            owner = owners_of(gm, topic, p)
            rows.append([f"owner of partition {p} (hottest)",
                         describe_member(owner[0]) if owner else "nobody: the partition is not assigned"])
    shown = gm.members[:20]
    for m in shown:
        ps = m.assignment.get(topic, ())
        owns = ("partitions " + ",".join(map(str, ps))) if ps else "no partition of this topic"
        where = f"host {m.host or '?'}, member-id {m.member_id}" + (f", instance-id {m.instance_id}" if m.instance_id else "")
        rows.append([f"member {m.client_id or m.member_id}", f"{owns}  ({where})"])
    if len(gm.members) > len(shown):
        rows.append(["", f"... {len(gm.members) - len(shown)} more member(s) (--format json lists all)"])
    return rows
