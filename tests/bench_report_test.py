#!/usr/bin/env python3
"""Tests of the benchmark report script (bench/report.py, bench/report_plots.py).

On two small fixture runs (tests/fixtures/bench_report_old.json and bench_report_new.json,
each in the format report.py writes as raw.json, rounds included): compare mode flags exactly
the changes larger than the noise; the log-scale choice; the report and raw.json carry no host
name and no absolute path; --quick cannot write outside the build directory. On a small load
curve built here: which steps count as sustained, where each system saturated, and that a load
group gets its own tables and only the latency-against-load plot. The ratio per round pairs
each round with the baseline's, and --from-raw writes a kept run's report again.

Usage: bench_report_test.py [unittest options]   (registered with ctest: tests/bench_report.cmake)
"""

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import unittest
import unittest.mock
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
        self.assertEqual([c.strip() for c in manual.strip("|").split("|")][:7],
                         ["manual", "27 µs", "26–28 µs", "1.00 (baseline)", "–", "5.29×",
                          "5.29× (5.20–5.38×)"])

    def test_the_ratio_per_round_pairs_each_round_with_the_baseline(self):
        # The baseline's second round ran on a slow host, and so did the variant's: per round
        # the variant is 1.2x, while the ratio of the two medians (24 / 10) says 2.4x.
        runs = []
        for variant, times in (("base", (10.0, 20.0, 10.0)), ("fast", (12.0, 24.0, 30.0))):
            for index, time in enumerate(times, 1):
                runs.append({"name": f"g/{variant}", "run_name": f"g/{variant}",
                             "run_type": "iteration", "real_time": time, "cpu_time": time,
                             "time_unit": "us", "iterations": 1, "report_round": index})
        entry = report.build_groups([{"context": {"baseline:g": "base"},
                                      "benchmarks": runs}])["g"]
        lines = report.group_table(entry)
        self.assertIn("| ratio per round (min–max) |", lines[0])
        cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
                 for line in lines[2:]}
        self.assertEqual(cells["fast"][3:5], ["2.40×", "1.20× (1.20–3.00×)"])
        self.assertEqual(cells["base"][3:5], ["1.00 (baseline)", "–"])
        # Rounds that cannot be paired (one round, or no round numbers) get no column.
        for run in runs:
            del run["report_round"]
        entry = report.build_groups([{"context": {"baseline:g": "base"},
                                      "benchmarks": runs}])["g"]
        self.assertNotIn("per round", report.group_table(entry)[0])

    def test_latency_counters_get_their_own_table(self):
        entry = self.groups["sqlite_write"]
        self.assertNotIn("p99_us", report.group_table(entry)[0])
        latency = report.latency_table(entry)
        self.assertIn("| variant | p50 | p90 | p99 | p99.9 | max |", latency)
        self.assertTrue(any(line.startswith("| sqloop/64 | 27 | 30 | 60 | 90 | 120 |")
                            for line in latency))

    def test_each_latency_percentile_is_its_median_over_the_rounds(self):
        # Three rounds of a paced variant: the same time per op in each (the arrival rate), so
        # "the median round" is arbitrary; one round's stall must not stand for the run.
        runs = []
        for p50, p99 in ((3.0, 150.0), (4.0, 4000.0), (5.0, 140.0)):
            runs.append({"name": "sqlite_mixed/paced/real_time", "run_name":
                         "sqlite_mixed/paced/real_time", "run_type": "iteration",
                         "real_time": 20.0, "cpu_time": 20.0, "time_unit": "us",
                         "iterations": 1, "read_p50_us": p50, "read_p99_us": p99})
        entry = report.build_groups([{"context": {}, "benchmarks": runs}])["sqlite_mixed"]
        latency = report.latency_table(entry)
        self.assertIn("| variant | read p50 | read p99 |", latency)
        self.assertIn("| paced | 4 | 150 |", latency)

    def test_memory_groups_are_measured_in_bytes(self):
        entry = self.groups["http_idle"]
        self.assertEqual(entry["rows"][0]["value"], 4200.0)
        self.assertIn("4.1 KiB", report.group_table(entry)[2])


class FromRawTest(unittest.TestCase):
    def test_writes_the_report_of_a_kept_run_again(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "again.md"
            with contextlib.redirect_stdout(io.StringIO()):
                code = report.main(["--from-raw", str(NEW), "--out", str(out)])
            self.assertEqual(code, 0)
            text = out.read_text(encoding="utf-8")
            self.assertIn("| Commit | 2222222+dirty |", text)
            self.assertIn("median time of 3 interleaved rounds", text)
            self.assertIn("| manual | 27 µs | 26–28 µs | 1.00 (baseline) |", text)
            self.assertEqual(load(Path(tmp) / "again" / "raw.json"), load(NEW))


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


def load_run(system, offered, achieved, p50, p99, unserved=0.0):
    """One step of a load curve, as sqloop_bench_load writes it (one round)."""
    name = f"load_write/{system}/{offered}/iterations:1/manual_time"
    return {"name": name, "run_name": name, "run_type": "iteration", "iterations": 1,
            "real_time": 1e9 / achieved, "time_unit": "ns", "offered_per_s": float(offered),
            "achieved_per_s": achieved, "p50_us": p50, "p99_us": p99, "p99_9_us": p99 * 1.5,
            "unserved": unserved, "binary": "sqloop_bench_load", "report_round": 1}


LOAD_DOCUMENT = {
    "context": {"baseline:load_write": "plain", "load:load_write": "achieved_per_s",
                "description:load_write": "open loop"},
    "benchmarks": [
        # Listed out of order: the curves are sorted by offered rate.
        load_run("sqloop", 4000, 3990, 400, 5000),
        load_run("sqloop", 1000, 999, 300, 4000),
        load_run("sqloop", 2000, 1995, 350, 4500),
        load_run("sqloop", 8000, 7900, 500, 90000),     # Keeps up, but p99 grew 22x: saturated.
        load_run("sqloop", 16000, 9000, 9e4, 9e5, 0.4),
        load_run("plain", 1000, 950, 900, 9000),
        load_run("plain", 2000, 1000, 9e4, 4e5, 0.3),   # Achieved half the offered rate.
        load_run("plain", 4000, 990, 2e5, 8e5, 0.7),
        load_run("pool4", 1000, 999, 80, 900, 0.001),   # Something left unserved already.
        load_run("pool4", 2000, 700, 9e4, 9e5, 0.5),
        load_run("pool16", 1000, 999, 80, 900),
        load_run("pool16", 2000, 1500, 90, 1000),       # A stall in one step...
        load_run("pool16", 4000, 3999, 95, 1200),       # ...does not hide the next one.
        load_run("pool16", 8000, 4000, 9e4, 9e5, 0.5),
    ]}


class LoadCurveTest(unittest.TestCase):
    def setUp(self):
        self.entry = report.build_groups([LOAD_DOCUMENT])["load_write"]
        self.curves = report.load_curves(self.entry)

    def test_steps_are_sorted_and_judged(self):
        sqloop = self.curves["sqloop"]
        self.assertEqual([step["offered"] for step in sqloop], [1000, 2000, 4000, 8000, 16000])
        self.assertEqual([step["sustained"] for step in sqloop], [True, True, True, False, False])
        self.assertEqual([step["sustained"] for step in self.curves["plain"]],
                         [True, False, False])
        self.assertFalse(self.curves["pool4"][0]["sustained"])  # 0.1 % unserved.

    def test_summary_says_where_each_system_saturated(self):
        summary = {row[0]: row[1:] for row in report.load_summary(self.curves, "plain")}
        self.assertEqual(summary["sqloop"][:3], (4000, 5000, 9000))
        self.assertAlmostEqual(summary["sqloop"][3], 9000 / 1000)
        self.assertEqual(summary["plain"], (1000, 9000, 1000, 1.0))
        self.assertEqual(summary["pool4"][:2], (None, None))  # Not even its lowest step.
        self.assertEqual(summary["pool16"][:2], (4000, 1200))  # Its highest sustained step.

    def test_load_group_gets_its_own_tables(self):
        lines = report.group_section("load_write", self.entry, {}, Path("/tmp/x.md"))
        text = "\n".join(lines)
        self.assertNotIn("time/op", text)
        self.assertIn("| sqloop | 4000 | 5000 | 9000 | 9.00× |", text)
        self.assertIn("| plain (baseline) | 1000 | 9000 | 1000 | 1.00× |", text)
        self.assertIn("| pool4 | none | – |", text)
        self.assertIn("| sqloop | 8000 | 7900 | 500 | 90k | 135k | 0.0% | **no** |", text)

    def test_a_non_load_group_has_no_curves(self):
        groups = report.build_groups([load(NEW)])
        self.assertIsNone(groups["sqlite_write"]["load"])

    def test_only_the_load_chart_is_drawn(self):
        import report_plots  # pylint: disable=import-outside-toplevel
        with tempfile.TemporaryDirectory() as tmp:
            plots, note = report_plots.write_plots({"load_write": self.entry}, Path(tmp))
            if note:
                self.skipTest(note)  # matplotlib is optional.
            self.assertEqual([(title, path.name) for title, path in plots["load_write"]],
                             [("latency against load", "load_write.png")])
            self.assertGreater((Path(tmp) / "load_write.png").stat().st_size, 0)


class LoadPlotLabelTest(unittest.TestCase):
    def test_latency_ticks_name_their_unit(self):
        import report_plots  # pylint: disable=import-outside-toplevel
        self.assertEqual([report_plots.time_label(v) for v in (100, 1e4, 1e6, 2.5e6)],
                         ["100 µs", "10 ms", "1 s", "2.5 s"])


class QuickEnvironmentTest(unittest.TestCase):
    def test_quick_reaches_the_listing_too(self):
        quick = report.parse_args(["--build-dir", "unused", "--quick"])
        self.assertEqual(report.benchmark_environment(quick)["SQLOOP_BENCH_QUICK"], "1")
        full = report.parse_args(["--build-dir", "unused"])
        self.assertNotIn("SQLOOP_BENCH_QUICK", report.benchmark_environment(full, X="1"))


class NumberFormatTest(unittest.TestCase):
    def test_large_counters_keep_three_digits_and_a_suffix(self):
        self.assertEqual([report.format_number(v) for v in (0, 12, 12_345, 4.09e6, 4.09e9)],
                         ["0", "12", "12.35k", "4.09M", "4.09G"])


class ModifierEnvironmentTest(unittest.TestCase):
    # A stand-in benchmark binary: writes the GLIBC_TUNABLES it was given as its one result.
    FAKE = ("#!/usr/bin/env python3\n"
            "import json, os, sys\n"
            "out = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--benchmark_out=')][0]\n"
            "json.dump({'benchmarks': [{'name': 'x', 'tunables': "
            "os.environ.get('GLIBC_TUNABLES', '')}]}, open(out, 'w'))\n")

    def run_fake(self, name):
        options = report.parse_args(["--build-dir", "unused"])
        options.aslr_prefix = []
        with tempfile.TemporaryDirectory() as temp:
            binary = Path(temp) / "sqloop_bench_fake"
            binary.write_text(self.FAKE, encoding="utf-8")
            binary.chmod(0o755)
            data, error = report.run_one(binary, name, Path(temp) / "out.json", options)
        self.assertIsNone(error)
        return data["benchmarks"][0]["tunables"]

    def test_a_thp_variant_runs_with_malloc_on_huge_pages_and_no_other_does(self):
        self.assertEqual(self.run_fake("registry_zipf/100000_all_asleep+thp"),
                         "glibc.malloc.hugetlb=1")
        self.assertEqual(self.run_fake("registry_zipf/one_tenant+thp"), "glibc.malloc.hugetlb=1")
        with unittest.mock.patch.dict("os.environ", {"GLIBC_TUNABLES": ""}):
            self.assertEqual(self.run_fake("registry_zipf/one_tenant"), "")


class AddressLayoutTest(unittest.TestCase):
    # personality(2)'s ADDR_NO_RANDOMIZE, as /proc/self/personality shows it (hexadecimal).
    ADDR_NO_RANDOMIZE = 0x0040000

    def test_the_benchmarks_run_with_randomisation_off_where_the_host_allows(self):
        prefix = report.aslr_off_prefix()
        if not prefix:
            self.skipTest("this host does not let a process turn randomisation off")
        shown = subprocess.run([*prefix, "cat", "/proc/self/personality"], capture_output=True,
                               text=True, check=True).stdout
        self.assertTrue(int(shown, 16) & self.ADDR_NO_RANDOMIZE, shown)
        rows = dict(report.machine_info({"aslr": "off"}))
        self.assertTrue(rows["Address-space randomisation"].startswith("off"))


if __name__ == "__main__":
    unittest.main()
