"""bench/harness.py: peak RSS is the measured child's own, alternating runs swap their order."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import harness  # noqa: E402

ALLOCATE = "import sys, time; b = bytearray(int(sys.argv[1]) * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.3); print('{\"ok\": 1}')"


def test_peak_rss_is_that_childs_not_the_largest_child_so_far_nor_the_parents(tmp_path):
    ballast = bytearray(400 * 2**20)  # a big parent: wait4's ru_maxrss would give every child >= 400 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    big = harness.run_measured([sys.executable, "-c", ALLOCATE, "300"])
    small = harness.run_measured([sys.executable, "-c", ALLOCATE, "10"])
    logged = harness.run_measured([sys.executable, "-c", ALLOCATE, "10"], log=tmp_path / "log")
    assert big["rc"] == small["rc"] == logged["rc"] == 0
    assert big["peak_rss_mb"] >= 300
    assert small["peak_rss_mb"] < 150 and logged["peak_rss_mb"] < 150
    assert harness.last_json_line(small["stdout"]) == {"ok": 1}
    assert (tmp_path / "log").read_text().strip() == '{"ok": 1}'
    del ballast


def test_timeout_kills_the_child():
    r = harness.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert r["rc"] == 124 and r["wall_seconds"] < 10


def test_alternate_reverses_the_order_every_other_rep():
    order = []
    runs = harness.alternate({"a": lambda rep: order.append("a") or {"x": rep},
                              "b": lambda rep: order.append("b") or {"x": 10 + rep}}, 3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert harness.medians(runs["b"]) == {"x": 11}
