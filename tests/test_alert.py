"""keyscope.prometheus.alert, pure: kafka_exporter's values, Prometheus 2.42's arithmetic, topk(1), and the why-line."""

from __future__ import annotations

import pytest

from keyscope.prometheus import alert
from keyscope import lag as lagmod
from keyscope.kafka.client import Watermarks


def topic(committed, ends, listed=None):
    listed = listed or ends
    marks = {p: Watermarks(low=0, high=ends[p], list_offsets_high=listed[p]) for p in ends}
    return lagmod.summarize_topic("t", committed, marks)


def test_exporter_values_sentinel_and_negative():
    t = topic({0: 10, 2: 80}, {0: 20, 1: 5, 2: 50})
    assert [p.exporter_lag for p in t.partitions] == [10, -1, -30]
    assert t.alert.partition_lag == ((0, 10.0), (1, -1.0), (2, -30.0))
    assert alert.alert_topic("g", "t", {}, {0: 5}) is None  # no commit on the topic: kafka_exporter skips it


def test_incremental_mean_in_text_order_is_not_sum_over_n():
    lags = [19, 370, 5, 34, 2, 38, 25, 28, 39, 10, 39, 0]
    order = alert.stored_order(range(12))
    assert order == [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    mean = alert.prom_avg([lags[p] for p in order])
    assert mean != sum(lags) / 12 and mean != alert.prom_avg(lags)
    t = topic({p: 0 for p in range(12)}, dict(enumerate(lags)))
    assert t.alert.skew_ratio == 370 / mean == t.skew_ratio  # clean data: both readings, same arithmetic


@pytest.mark.parametrize(
    "committed, ends, ratio",
    [
        ({0: 0, 1: 0, 2: 0}, {0: 3, 1: 0, 2: 0}, 3.0),
        ({0: 0}, {0: 3, 1: 0, 2: 0}, 3 / alert.prom_avg([3, -1, -1])),  # "9.0"
        ({0: 0, 1: 0, 2: 0}, {0: 0, 1: 0, 2: 0}, 0.0),  # 0 / clamp_min(0, 0.001)
        ({0: 5, 1: 5}, {0: 4, 1: 4}, -1 / 0.001),  # every lag negative: the mean is clamped, the ratio negative
    ],
)
def test_skew_ratio_as_deployed(committed, ends, ratio):
    assert topic(committed, ends).alert.skew_ratio == ratio


def test_topk1_keeps_one_series_for_the_cluster_first_of_equals():
    a = alert.AlertTopic("a", "t", ((0, 5.0), (1, 9.0)))
    b = alert.AlertTopic("b", "u", ((0, 9.0), (1, 2.0)))
    h = alert.topk1([b, a])
    assert (h.group, h.topic, h.partition, h.value) == ("a", "t", 1, 9.0) and h.ties == (("b", "u", 0),)
    assert alert.topk1([]) is None


def test_why_differ_names_the_artefact_and_the_real_skew():
    never = topic({0: 0, 2: 0}, {0: 10, 1: 4, 2: 0})
    assert alert.why_differ(never, never.alert) == (
        "kafka:group_skew_ratio is 3.3333333333333335 (above 3: no 3 lags >= 0 can give that) because partition 1 was "
        "never committed: kafka_exporter reports -1, which lowers the mean; the real skew is 2")
    ahead = topic({0: 0, 1: 0, 2: 30}, {0: 75, 1: 0, 2: 0})
    assert "partition 2 is committed 30 ahead of its end offset: kafka_exporter reports lag -30" in alert.why_differ(ahead, ahead.alert)
    listed = topic({0: 772, 1: 100}, {0: 772, 1: 500}, {0: 752, 1: 500})  # Tansu's ListOffsets quirk
    text = alert.why_differ(listed, listed.alert)
    assert "ListOffsets under-reports the end offset of partition 0 by up to 20" in text and "caught up" in text
    clean = topic({0: 0, 1: 0}, {0: 5, 1: 1})
    assert alert.why_differ(clean, clean.alert) is None


@pytest.mark.parametrize("x, text", [(3.0, "3"), (3.0088757396449703, "3.0088757396449703"), (1e16, "10000000000000000"),
                                     (1e-05, "0.00001"), (-1000.0, "-1000")])
def test_prom_text_is_the_http_apis_formatting(x, text):
    assert alert.prom_text(x) == text
