#!/usr/bin/env python3
"""Checks that docs/overhead.md carries no measured figures of its own.

The numbers of the benchmark suite live in docs/benchmarks.md, the generated run of record;
docs/overhead.md explains them and must not copy them, or it contradicts the report as soon as
the report is regenerated. Figures measured elsewhere may be quoted, in a block quote that
starts with "> **Outside figure** (" and says in the parenthesis where and when they were
measured. Outside such blocks, no time (ns, µs, ms), ratio (×) or rate (k ops/s...) may
appear. Percentages and workload parameters (256 connections, 16 KiB, 100,000 rows) may.

Usage: doc_numbers_test.py [unittest options]   (registered with ctest: tests/bench_report.cmake)
"""

import re
import sys
import unittest
from pathlib import Path

OVERHEAD = Path(__file__).resolve().parent.parent / "docs" / "overhead.md"
# A measured figure: a number with a unit of time, a ratio, or a rate.
MEASURED = re.compile(r"\d[\d,.]*\s?(?:[kM]\s?)?(?:ns|µs|us|ms|×|x\b|(?:ops|commits|requests|"
                      r"reads|writes|databases)/s)")
# A code span that is one identifier (a counter such as `ticks_over_1ms`): a name, not a figure.
IDENTIFIER = re.compile(r"`\w+`")
OUTSIDE_FIGURE = re.compile(r"^> \*\*Outside figure\*\* \(")


def own_lines(text):
    """(line number, line) for every line outside an Outside figure block quote."""
    in_outside_block = False
    for number, line in enumerate(text.splitlines(), 1):
        if OUTSIDE_FIGURE.match(line):
            in_outside_block = True
        elif not line.startswith(">"):
            in_outside_block = False
        if not in_outside_block:
            yield number, line


def measured_figures(text):
    """[(line number, figure)] of the measured figures outside Outside figure blocks."""
    return [(number, match.group(0)) for number, line in own_lines(text)
            for match in MEASURED.finditer(IDENTIFIER.sub("``", line))]


class OverheadDocTest(unittest.TestCase):
    def setUp(self):
        self.text = OVERHEAD.read_text(encoding="utf-8")

    def test_has_no_measured_figures_outside_outside_figure_blocks(self):
        self.assertEqual(measured_figures(self.text), [],
                         "docs/overhead.md quotes figures of its own; take them from "
                         "docs/benchmarks.md (the run of record) or mark them as an "
                         "Outside figure with where and when they were measured")

    def test_outside_figures_say_where_and_when(self):
        blocks = re.findall(r"^> \*\*Outside figure\*\* \(([^)]*)\)", self.text, re.MULTILINE)
        self.assertTrue(blocks)
        for where in blocks:
            self.assertRegex(where, r"\b20\d\d\b|when\s",
                             f"an Outside figure without a date: {where}")

    def test_points_to_the_run_of_record(self):
        self.assertIn("docs/benchmarks.md", self.text)


class SelfTest(unittest.TestCase):
    """Negative controls: the check finds what it must find."""

    def test_catches_a_copied_figure(self):
        text = "sqloop/64 commits 42× as many rows.\nA read took 5.6 µs and 38.6k ops/s."
        self.assertEqual([f for _, f in measured_figures(text)], ["42×", "5.6 µs", "38.6k ops/s"])

    def test_a_counter_name_is_not_a_figure(self):
        text = "`ticks_over_1ms` counts them; `tick_max_us` is 3 ms."
        self.assertEqual([f for _, f in measured_figures(text)], ["3 ms"])

    def test_allows_figures_inside_an_outside_figure_block_only(self):
        text = ("> **Outside figure** (measured in 2026, elsewhere): 5.6 µs\n"
                "> and 1.95 µs.\n\nBut 3 ms here.")
        self.assertEqual(measured_figures(text), [(4, "3 ms")])

    def test_allows_parameters_and_percentages(self):
        text = "256 connections, 16 KiB buffers, 100,000 rows, 90 % reads, batch 64."
        self.assertEqual(measured_figures(text), [])


if __name__ == "__main__":
    sys.exit(unittest.main())
