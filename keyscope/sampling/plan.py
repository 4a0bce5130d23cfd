"""How many records to take from each partition."""

from __future__ import annotations


def plan_budgets(avail: dict[int, int], max_records: int | None, per_partition: int | None) -> dict[int, int]:
    """Records to take per partition: capped per partition, and ``max_records``
    split in proportion to what each partition offers (largest remainder), so
    the sample's partition mix follows the topic's rather than flattening it.
    """
    cap = {p: max(0, a if per_partition is None else min(a, per_partition)) for p, a in avail.items()}
    total = sum(cap.values())
    if max_records is None or total <= max_records:
        return cap
    share = {p: max_records * c / total for p, c in cap.items()}
    out = {p: min(cap[p], int(s)) for p, s in share.items()}
    left = max_records - sum(out.values())
    for p in sorted(share, key=lambda p: (-(share[p] - int(share[p])), p)):
        if left <= 0:
            break
        if out[p] < cap[p]:
            out[p] += 1
            left -= 1
    return out

