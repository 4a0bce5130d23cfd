"""whatif/recommend's dictionary codes read on a thread while the CLI imports the rest (keyscope.io.prefetch):
the same codes as the main thread's read, used only for the same columns of the same file, and the CLI's
output with the thread equal to the output without it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import keyscope.whatif.engine as engine
from keyscope.advice import Constraints, recommend
from keyscope.io import prefetch
from keyscope.sample import read_sample
from tests.test_scenarios import make_sample
from tests.test_whatif_file_codes import codes_of, write


def _file(tmp_path, seed=1, n=12_000):
    path = tmp_path / "s.parquet"
    write(make_sample(seed=seed, n=n, keys=700), path)
    return path


def _equal(a, b):
    (ca, va, sa), (cb, vb, sb) = a, b
    assert ca.keys() == cb.keys() and va.keys() == vb.keys()
    for c in ca:
        assert np.array_equal(ca[c], cb[c]), c
        assert va[c].equals(vb[c]), c
    assert np.array_equal(sa, sb)


def test_the_threads_codes_equal_the_main_threads_and_are_taken_once(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "CODES_MIN_ROWS", 0)
    path = _file(tmp_path)
    cols = ["key", "user_id", "region"]
    prefetch.start_codes(path)  # every field: recommend's
    got = prefetch.take_codes(path, cols, 12_000)
    assert got is not None
    _equal(got, codes_of(path, cols))
    assert prefetch.take_codes(path, cols, 12_000) is None  # taken once
    prefetch.start_codes(path, ["region", "nope"])  # whatif's fields; one the file does not have
    _equal(prefetch.take_codes(path, ["key", "region"], 12_000), codes_of(path, ["key", "region"]))


def test_refused_for_other_columns_another_length_or_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "CODES_MIN_ROWS", 0)
    path = _file(tmp_path)
    prefetch.start_codes(path, ["region"])
    assert prefetch.take_codes(path, ["key", "user_id"], 12_000) is None
    prefetch.start_codes(path)
    assert prefetch.take_codes(path, ["key", "user_id", "region"], 11_999) is None
    prefetch.start_codes(path)
    prefetch._codes[str(path)].thread.join()
    write(make_sample(seed=2, n=12_000, keys=700), path)  # replaced after the thread read it
    assert prefetch.take_codes(path, ["key", "user_id", "region"], 12_000) is None
    # through recommend: a read of the file before it changed is never used
    prefetch.start_codes(path)
    prefetch._codes[str(path)].thread.join()
    write(make_sample(seed=1, n=12_000, keys=700), path)
    monkeypatch.setattr(engine, "COMPILED_MIN_ROWS", 1_000)
    a = recommend(read_sample(path, columns=("partition",)), Constraints())
    b = recommend(read_sample(path, columns=("partition",)), Constraints())
    assert a.verdict == b.verdict and [r.skew for r in a.ranked] == [r.skew for r in b.ranked]


def test_below_the_threshold_or_without_fields_nothing_is_read(tmp_path, monkeypatch):
    path = _file(tmp_path)
    prefetch.start_codes(path)  # 12k rows < CODES_MIN_ROWS
    assert prefetch.take_codes(path, ["key", "user_id", "region"], 12_000) is None
    monkeypatch.setattr(prefetch, "CODES_MIN_ROWS", 0)
    prefetch.start_codes(path, ["nope"])
    assert prefetch.take_codes(path, ["key"], 12_000) is None


def test_a_stopped_read_ends_between_row_groups_and_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "CODES_MIN_ROWS", 0)
    path = _file(tmp_path)
    job = prefetch._Job(str(path), prefetch._read_codes(None))
    job.stop.set()
    job.thread.start()
    job.thread.join(timeout=60)
    assert not job.thread.is_alive() and job.result is None
    prefetch._codes[str(path)] = job
    assert prefetch.take_codes(path, ["key", "user_id", "region"], 12_000) is None


def test_the_threshold_is_where_the_codes_are_read_from_the_pages():
    assert prefetch.CODES_MIN_ROWS >= engine.COMPILED_MIN_ROWS


def _cli(path, *args, thread: bool):
    """The CLI in a fresh process, the thread on for any size or never; (its JSON, the take_codes hits)."""
    code = ("import sys, json\nfrom keyscope.cli import main\nfrom keyscope.io import prefetch\n"
            "import keyscope.whatif.engine as e\ne.COMPILED_MIN_ROWS = 1_000\n"
            f"prefetch.CODES_MIN_ROWS = {0 if thread else 1 << 62}\ntook = []\norig = prefetch.take_codes\n"
            "prefetch.take_codes = lambda *a: took.append(orig(*a)) or took[-1]\n"
            "try:\n    main(sys.argv[1:])\n"
            "except SystemExit as x:\n    assert not x.code, x.code\n"
            "print(json.dumps([t is not None for t in took]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, *args, str(path), "--format", "json"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    *doc, used = out.stdout.strip().splitlines()
    got = json.loads("\n".join(doc))
    got.pop("keyscope_version", None)
    return got, json.loads(used)


def test_recommend_and_whatif_with_the_thread_print_what_they_print_without_it(tmp_path):
    path = _file(tmp_path, n=30_000)
    for args in (["recommend"], ["whatif", "--key-by", "key,region", "--salt-hot", "1:4", "--salt-by", "user_id"]):
        got, used = _cli(path, *args, thread=True)
        assert used == [True], args  # the thread's codes were the ones used
        want, used = _cli(path, *args, thread=False)
        assert used == [False], args
        assert got == want, args
