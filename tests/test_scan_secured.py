"""``keyscope scan`` through TLS and SASL listeners of a real Apache Kafka node (tests/secured).

The scan reads with keyscope's own client (keyscope.kafka.lean), not kafka-python's consumer: these
cases check that it authenticates as ``keyscope sample`` does (the same client.properties) and counts
every record, with one worker and with forked worker processes, and that a wrong password is one line,
exit 4.
"""

from __future__ import annotations

import pytest

from keyscope.scan import read_profile

from .test_security import CASES, one_line_error, render_case, ks, secure  # noqa: F401  (secure: the fixture)


@pytest.mark.parametrize("case, workers", [("ssl-pem", 1), ("sasl-scram-sha-512", 2), ("sasl-ssl-plain-pkcs12-trust", 1),
                                           ("sasl-oauthbearer-unsecured", 1)])
def test_scan_through_client_properties(secure, case, workers, tmp_path):  # noqa: F811
    assert case in CASES
    bootstrap, config = render_case(secure, case)
    out = tmp_path / "p.json"
    r = ks("scan", "-b", bootstrap, "--command-config", config, "-t", "ok-t", "-o", out, "-q", "--workers", workers,
           "--tasks", 3)
    assert r.exit_code == 0, r.stderr
    p = read_profile(out)
    assert p.complete and p.records == 300 and sorted(p.partitions) == [0, 1, 2]
    assert sum(s.records for s in p.partitions.values()) == 300 and p.expressions["key"].null_keys == 0


def test_scan_with_a_wrong_password_is_one_line_exit_4(secure, tmp_path):  # noqa: F811
    bootstrap, config = render_case(secure, "sasl-scram-sha-512", password="wrong")
    out = tmp_path / "p.json"
    r = ks("scan", "-b", bootstrap, "--command-config", config, "-t", "ok-t", "-o", out, "-q", "--workers", 1)
    one_line_error(r, 4, "authentication failed")
    assert not out.exists()


def test_scan_of_a_topic_not_readable_is_one_line_exit_4(secure, tmp_path):  # noqa: F811
    """ro-t: alice may DESCRIBE it but not READ it; secret-t: neither (not authorized, or does not exist)."""
    for topic, says in (("ro-t", "needs READ"), ("secret-t", "not authorized")):
        bootstrap, config = render_case(secure, "sasl-plain")
        out = tmp_path / f"{topic}.json"
        r = ks("scan", "-b", bootstrap, "--command-config", config, "-t", topic, "-o", out, "-q", "--workers", 1)
        one_line_error(r, 4, says)
        assert not out.exists()
