#!/usr/bin/env python3
"""Tests of the benchmark report script (bench/report.py, bench/report_plots.py).

On two small fixture runs (tests/fixtures/bench_report_old.json and bench_report_new.json,
each in the format report.py writes as raw.json, rounds included): compare mode flags exactly
the changes larger than the noise; the log-scale choice; the report and raw.json carry no host
name and no absolute path; --quick cannot write outside the build directory.

Usage: bench_report_test.py [unittest options]   (registered with ctest: tests/bench_report.cmake)
"""

import contextlib
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402  (needs the path above)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD = FIXTURES / "bench_report_old.json"
NEW = FIXTURES / "bench_report_new.json"
# What the fixtures put where a real run puts the machine's own: none may reach the output.
FIXTURE_HOSTS = ("old-fixture-host", "new-fixture-host")
FIXTURE_BUILD_DIR = Path("/home/fixture-user/src/sqloop/build/release")


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def table_rows(lines):
    """{benchmark: [cells]} from the comparison's Markdown table."""
    rows = {}
    for line in lines:
        if line.startswith("| ") and not line.startswith("| benchmark"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


class CompareTest(unittest.TestCase):
    def setUp(self):
        self.lines, self.flagged = report.compare_documents(load(OLD), load(NEW))
        self.rows = table_rows(self.lines)

    def test_flags_a_change_whose_spreads_do_not_overlap(self):
        self.assertEqual(self.rows["dispatch/manual"][-1], "**slower**")
        self.assertEqual(self.rows["dispatch/manual"][5], "1.29×")

    def test_does_not_flag_a_change_inside_the_noise(self):
        self.assertEqual(self.rows["dispatch/coro"][-1], "")  # Spreads overlap.
        self.assertEqual(self.rows["dispatch/coro_large"][-1], "")  # Apart, but only 3.6 %.
        self.assertEqual(self.rows["dispatch/floor"][-1], "")

    def test_single_rounds_need_a_large_change(self):
        self.assertEqual(self.rows["sqlite_write/plain_full/real_time"][-1], "")  # +10 %.
        self.assertEqual(self.rows["sqlite_write/sqloop/64/real_time"][-1], "**faster**")
        self.assertEqual(self.rows["sqlite_write/plain_full/real_time"][2], "–")  # No spread.

    def test_memory_benchmarks_compare_bytes(self):
        row = self.rows["http_idle/10000/iterations:1"]
        self.assertEqual(row[1], "2.93 KiB")
        self.assertEqual(row[-1], "**larger**")

    def test_shows_the_spread_of_rounds(self):
        self.assertEqual(self.rows["dispatch/manual"][2], "20–22 µs")
        self.assertEqual(self.rows["dispatch/manual"][4], "26–28 µs")

    def test_lists_benchmarks_in_one_run_only_and_skips_errors(self):
        text = "\n".join(self.lines)
        self.assertIn("Only in the old run: `dispatch/retired`.", text)
        self.assertIn("Only in the new run: `dispatch/added`.", text)
        self.assertNotIn("dispatch/broken", self.rows)
        self.assertEqual(self.flagged, 3)
        self.assertIn("commit 2222222+dirty", text)

    def test_command_line_prints_and_writes_the_table(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "compare.md"
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                status = report.main(["--compare", str(OLD), str(NEW), "--out", str(out)])
            self.assertEqual(status, 0)
            written = out.read_text(encoding="utf-8")
            self.assertIn("| dispatch/manual |", written)
            self.assertIn(written.strip(), printed.getvalue())


class LogScaleTest(unittest.TestCase):
    def test_log_scale_only_beyond_twenty_times(self):
        self.assertFalse(report.use_log_scale([1.0, 20.0]))
        self.assertTrue(report.use_log_scale([1.0, 20.5]))
        self.assertTrue(report.use_log_scale([156.0, 9e6]))  # loop_timer: ns against ms.

    def test_ignores_missing_and_non_positive_values(self):
        self.assertFalse(report.use_log_scale([None, 0.0, 5.0, 50.0]))
        self.assertFalse(report.use_log_scale([3.0]))
        self.assertFalse(report.use_log_scale([]))


class NoHostOrPathTest(unittest.TestCase):
    """The committed raw.json and the report name neither the machine nor its directories."""

    def check_clean(self, text):
        for host in FIXTURE_HOSTS:
            self.assertNotIn(host, text)
        self.assertNotIn(str(FIXTURE_BUILD_DIR), text)
        self.assertNotIn("/home/", text)
        self.assertIsNone(report.ABSOLUTE_PATH.search(text), text)

    def test_the_path_check_itself_finds_a_path(self):
        self.assertIsNotNone(report.ABSOLUTE_PATH.search("exit 1: /home/u/build/x failed"))
        self.assertIsNone(report.ABSOLUTE_PATH.search("http://127.0.0.1:80/v1 allocs/op"))

    def test_scrubbed_json_has_no_host_name_or_absolute_path(self):
        scrubbed = report.scrub_document(load(NEW), FIXTURE_BUILD_DIR)
        self.assertNotIn("host_name", scrubbed["context"])
        self.assertEqual(scrubbed["context"]["executable"], "sqloop_bench_dispatch")
        self.check_clean(json.dumps(scrubbed))

    def test_report_and_plots_have_no_host_name_or_absolute_path(self):
        document = report.scrub_document(load(NEW), FIXTURE_BUILD_DIR)
        groups = report.build_groups([document])
        options = report.parse_args(["--build-dir", "unused", "--repetitions", "3"])
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "benchmarks.md"
            import report_plots  # pylint: disable=import-outside-toplevel
            plots, _ = report_plots.write_plots(groups, Path(tmp) / "benchmarks")
            report.write_markdown(out, groups, document["context"], plots, None, options,
                                  ["dispatch/broken: <build>/bench/x failed"])
            text = out.read_text(encoding="utf-8")
        self.check_clean(text)
        self.assertIn("| Commit | 2222222+dirty |", text)
        self.assertIn("| Build type | Release |", text)
        self.assertIn("`-O3 -DNDEBUG`", text)
        if plots:  # matplotlib is optional (the plots are, too).
            for name in ("dispatch", "sqlite_write", "sqlite_write_cdf", "http_idle"):
                self.assertIn(f"](benchmarks/{name}.png)", text)


class ReportTablesTest(unittest.TestCase):
    def setUp(self):
        self.groups = report.build_groups([load(NEW)])

    def test_median_round_spread_ratio_and_floor(self):
        lines = report.group_table(self.groups["dispatch"])
        self.assertIn("× floor", lines[0])
        manual = next(line for line in lines if line.startswith("| manual |"))
        self.assertEqual([c.strip() for c in manual.strip("|").split("|")][:5],
                         ["manual", "27 µs", "26–28 µs", "1.00 (baseline)", "5.29×"])

    def test_latency_counters_get_their_own_table(self):
        entry = self.groups["sqlite_write"]
        self.assertNotIn("p99_us", report.group_table(entry)[0])
        latency = report.latency_table(entry)
        self.assertIn("| variant | p50 | p90 | p99 | p99.9 | max |", latency)
        self.assertTrue(any(line.startswith("| sqloop/64 | 27 | 30 | 60 | 90 | 120 |")
                            for line in latency))

    def test_memory_groups_are_measured_in_bytes(self):
        entry = self.groups["http_idle"]
        self.assertEqual(entry["rows"][0]["value"], 4200.0)
        self.assertIn("4.1 KiB", report.group_table(entry)[2])


class OutputLocationTest(unittest.TestCase):
    def test_quick_writes_under_the_build_directory_only(self):
        build = Path(tempfile.gettempdir()).resolve() / "some-build"
        quick = report.parse_args(["--build-dir", str(build), "--quick"])
        self.assertEqual(report.report_path(quick, build), build / "benchmarks-quick.md")
        outside = report.parse_args(["--build-dir", str(build), "--quick",
                                     "--out", str(report.REPO_ROOT / "docs" / "benchmarks.md")])
        self.assertIsNone(report.report_path(outside, build))
        inside = report.parse_args(["--build-dir", str(build), "--quick",
                                    "--out", str(build / "q.md")])
        self.assertEqual(report.report_path(inside, build), build / "q.md")

    def test_a_filtered_run_is_not_the_run_of_record(self):
        build = Path(tempfile.gettempdir()).resolve() / "some-build"
        filtered = report.parse_args(["--build-dir", str(build), "--filter", "dispatch"])
        self.assertEqual(report.report_path(filtered, build), build / "benchmarks-quick.md")
        full = report.parse_args(["--build-dir", str(build)])
        self.assertEqual(report.report_path(full, build),
                         report.REPO_ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    unittest.main()
