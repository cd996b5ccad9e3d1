#!/usr/bin/env python3
"""Run sqloop's benchmark suite and write its report (docs/benchmarks.md).

Usage:
    bench/report.py --build-dir build/release [--quick] [--out docs/benchmarks.md]

What it does:
    1. Finds every executable named sqloop_bench_* under BUILD_DIR/bench.
    2. Lists each binary's benchmarks (--benchmark_list_tests) and runs them one at a time
       (--benchmark_filter=^name$), with Google Benchmark's JSON written to a file per
       benchmark, printing a progress line as each result arrives. One process per benchmark
       costs a few milliseconds and makes progress reporting independent of stdout buffering;
       a crash is confined to one benchmark. Repetitions are interleaved rounds (every
       benchmark of the binary once, then again), so that a change in machine load during the
       run hits all variants of a group alike instead of skewing one ratio.
    3. Keeps the raw JSON: BUILD_DIR/bench/results/<binary>.json (Google Benchmark's own
       format, all of that binary's runs) and raw.json (every binary merged, each benchmark
       tagged with its "binary"), and copies raw.json next to the report
       (docs/benchmarks/raw.json).
    4. Writes the Markdown report with one table (and one PNG bar chart) per group, and prints
       a short summary table.
    5. Exits 1 if any benchmark reported an error (SkipWithError: "error_occurred" in the JSON)
       or a binary failed, 2 if no benchmark binary was found.

--quick sets --benchmark_min_time=0.01 (a double, in seconds, in Google Benchmark 1.7.1) and
one round, so the whole suite runs in seconds in CI and every correctness check inside the
benchmarks still runs. The default is 5 rounds at Google Benchmark's default minimum time,
reporting for each benchmark the run with the median time (machines running this are often
shared and noisy; the median resists outliers).

Conventions a benchmark binary follows to plug in (nothing here is specific to one group):
    * Binary name: sqloop_bench_<anything>, built under BUILD_DIR/bench.
    * Benchmark name: <family>/<variant>[/<args>...], e.g. dispatch/coro_pool,
      alloc/arena, loop/sqloop/64. Google Benchmark's own suffixes (min_time:, iterations:,
      repeats:, real_time, process_time, manual_time) are ignored for grouping.
    * Group: <family> followed by the "+modifier" part of <variant>, if any. So
      dispatch/coro+syscalls is in group "dispatch+syscalls" and dispatch/coro in "dispatch".
      Results are only compared within a group.
    * Baseline: the custom context entry "baseline:<group>" names the baseline variant
      (benchmark::AddCustomContext("baseline:dispatch", "manual"),
      AddCustomContext("baseline:dispatch+syscalls", "manual+syscalls"),
      AddCustomContext("baseline:alloc", "malloc")). Each row's ratio is its time divided by
      the time of the baseline variant with the same <args>, measured in the same run (or, if
      the baseline variant has no <args>, that one run: e.g. sqlite_write/plain_full against
      sqlite_write/sqloop/64). A group without a baseline entry is reported without ratios.
    * Optional context entries: "description:<group>" (one sentence printed under the group's
      heading: what one op is) and "compiler" (shown in the machine section; otherwise the
      compiler is read from BUILD_DIR/CMakeCache.txt), and "plot:<group>" = "<counter>": an
      extra line chart of that counter against the numeric <args> of each variant, with the
      baseline as a horizontal line (e.g. commits_per_s against the number of writers).
    * Time per op is Google Benchmark's real_time per iteration (an op is one benchmark
      iteration; the description says what that is). Every user counter is shown as a column;
      allocs_per_op (heap allocations per iteration, from sqloop::heap_counter) comes first.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Google Benchmark's standard fields in a JSON run; every other key is a user counter.
STANDARD_FIELDS = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type",
    "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
    "time_unit", "aggregate_name", "aggregate_unit", "error_occurred", "error_message",
    "label", "binary", "report_round",
}
# Name components Google Benchmark appends for run settings; they do not name a variant.
SETTING_COMPONENT = re.compile(r"^(min_time:|min_warmup_time:|iterations:|repeats:|"
                               r"real_time$|process_time$|manual_time$)")
NS_PER_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
UNIT_LABEL = {"ns": "ns", "us": "µs", "ms": "ms", "s": "s"}
QUICK_MIN_TIME_S = "0.01"      # Long enough to run every check, short enough for CI.
DEFAULT_REPETITIONS = 5        # Odd, so the median is a measured run; ~1 min for dispatch.
BENCHMARK_TIMEOUT_S = 600      # One benchmark may not take the whole 10-minute budget.
REGEX_SPECIALS = set(".[]{}()*+?^$|\\")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", required=True, type=Path,
                        help="CMake build directory (release build recommended)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny minimum time, one repetition: seconds, for CI")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="Markdown report to write (plots go to <out without .md>/)")
    parser.add_argument("--filter", default=None,
                        help="only run benchmarks whose name matches this Python regex")
    parser.add_argument("--repetitions", type=int, default=None,
                        help=f"interleaved rounds (default {DEFAULT_REPETITIONS}, "
                             "1 with --quick)")
    return parser.parse_args()


# ----------------------------------------------------------------------------- running

def find_binaries(build_dir):
    bench_dir = build_dir / "bench"
    if not bench_dir.is_dir():
        return []
    found = []
    for path in sorted(bench_dir.rglob("sqloop_bench_*")):
        if path.is_file() and os.access(path, os.X_OK) and path.suffix == "":
            found.append(path)
    return found


def list_benchmarks(binary):
    result = subprocess.run([str(binary), "--benchmark_list_tests=true"], capture_output=True,
                            text=True, timeout=BENCHMARK_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{binary.name} --benchmark_list_tests failed: "
                           f"{result.stderr.strip()[-500:]}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def exact_filter(name):
    """A regex matching only `name` (Benchmark 1.7.1 uses std::regex or POSIX ERE)."""
    return "^" + "".join("\\" + c if c in REGEX_SPECIALS else c for c in name) + "$"


def run_one(binary, name, out_file, options):
    command = [str(binary), f"--benchmark_filter={exact_filter(name)}",
               f"--benchmark_out={out_file}", "--benchmark_out_format=json",
               "--benchmark_format=console", "--benchmark_color=false"]
    if options.quick:
        command.append(f"--benchmark_min_time={QUICK_MIN_TIME_S}")
    out_file.unlink(missing_ok=True)  # Never read a previous run's result by mistake.
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=BENCHMARK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {BENCHMARK_TIMEOUT_S} s"
    if result.returncode != 0 or not out_file.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return None, f"exit status {result.returncode}: {' | '.join(tail)}"
    with open(out_file, encoding="utf-8") as f:
        return json.load(f), None


def run_binary(binary, results_dir, options, index, total):
    """Runs every benchmark of `binary` in interleaved rounds.

    Returns (one JSON document in Google Benchmark's format with every run, failures).
    """
    names = [n for n in list_benchmarks(binary)
             if options.filter is None or re.search(options.filter, n)]
    rounds = min(options.repetitions, SINGLE_ROUND.get(binary.name, options.repetitions))
    print(f"== [{index}/{total}] {binary.name}: {len(names)} benchmarks x {rounds} round(s)",
          flush=True)
    document = {"context": {}, "benchmarks": []}
    failures = []
    run_dir = results_dir / binary.name
    run_dir.mkdir(parents=True, exist_ok=True)
    failed_names = set()
    for round_index in range(1, rounds + 1):
        for position, name in enumerate(names, 1):
            if name in failed_names:
                continue  # Reported once; a broken benchmark is not worth re-running.
            started = time.monotonic()
            out_file = run_dir / f"{position:03d}.round{round_index}.json"
            data, error = run_one(binary, name, out_file, options)
            elapsed_s = time.monotonic() - started
            prefix = (f"   [{position}/{len(names)}]"
                      + (f" round {round_index}/{rounds}" if rounds > 1 else "") + f" {name}")
            if data is None:
                failed_names.add(name)
                failures.append(f"{binary.name} {name}: {error}")
                print(f"{prefix}  FAILED: {error}", flush=True)
                continue
            if not document["context"]:
                document["context"] = data.get("context", {})
            for run in data.get("benchmarks", []):
                run["binary"] = binary.name
                run["report_round"] = round_index
                document["benchmarks"].append(run)
                if run.get("error_occurred"):
                    failed_names.add(name)
                    failures.append(f"{binary.name} {run['name']}: {run.get('error_message')}")
            print(f"{prefix}  {describe_runs(data.get('benchmarks', []))}  "
                  f"({elapsed_s:.1f} s)", flush=True)
    return document, failures


def describe_runs(runs):
    chosen = select_runs(runs)
    if not chosen:
        return "no result"
    parts = []
    for run in chosen:
        if run.get("error_occurred"):
            parts.append(f"ERROR: {run.get('error_message')}")
            continue
        text = format_time(time_ns(run))
        allocs = run.get("allocs_per_op")
        if allocs is not None:
            text += f"  allocs/op={format_number(allocs)}"
        parts.append(text)
    return "; ".join(parts)


# ----------------------------------------------------------------------------- analysis

def select_runs(runs):
    """One run per benchmark name: the one with the median real time over the rounds.

    Taking a measured run (not an average) keeps its counters consistent with its time. A run
    with an error always wins, so an error is never hidden. If a binary was run with
    Google Benchmark's own repetitions, its "median" aggregate is used instead.
    """
    by_name = {}
    for run in runs:
        by_name.setdefault(run.get("run_name", run["name"]), []).append(run)
    chosen = []
    for candidates in by_name.values():
        errors = [r for r in candidates if r.get("error_occurred")]
        medians = [r for r in candidates if r.get("aggregate_name") == "median"]
        plain = sorted((r for r in candidates if r.get("run_type") != "aggregate"), key=time_ns)
        if errors:
            chosen.append(errors[0])
        elif medians:
            chosen.append(medians[0])
        elif plain:
            chosen.append(plain[(len(plain) - 1) // 2])
    return chosen


def split_name(run_name):
    """'dispatch/coro+syscalls/64' -> ('dispatch', 'coro+syscalls', '64', 'dispatch+syscalls')."""
    parts = [p for p in run_name.split("/") if not SETTING_COMPONENT.match(p)]
    family = parts[0]
    variant = parts[1] if len(parts) > 1 else ""
    args = "/".join(parts[2:])
    modifier = variant[variant.index("+"):] if "+" in variant else ""
    return family, variant, args, family + modifier


def time_ns(run):
    return run["real_time"] * NS_PER_UNIT.get(run.get("time_unit", "ns"), 1.0)


def counter_names(runs):
    names = set()
    for run in runs:
        names.update(k for k, v in run.items()
                     if k not in STANDARD_FIELDS and isinstance(v, (int, float)))
    ordered = sorted(names)
    if "allocs_per_op" in names:
        ordered.remove("allocs_per_op")
        ordered.insert(0, "allocs_per_op")
    return ordered


def build_groups(documents):
    """Returns {group: {"baseline": variant or None, "description": str, "rows": [...]}}."""
    contexts = {}
    for document in documents:
        contexts.update(document.get("context", {}))
    groups = {}
    for document in documents:
        for run in select_runs(document["benchmarks"]):
            family, variant, args, group = split_name(run.get("run_name", run["name"]))
            entry = groups.setdefault(group, {
                "baseline": contexts.get(f"baseline:{group}"),
                "description": contexts.get(f"description:{group}", ""),
                "plot_counter": contexts.get(f"plot:{group}"),
                "rows": []})
            entry["rows"].append({"family": family, "variant": variant, "args": args,
                                  "run": run})
    for entry in groups.values():
        baseline_ns = {}
        for row in entry["rows"]:
            if row["variant"] == entry["baseline"] and not row["run"].get("error_occurred"):
                baseline_ns[row["args"]] = time_ns(row["run"])
        for row in entry["rows"]:
            base = baseline_ns.get(row["args"])
            if base is None and set(baseline_ns) == {""}:
                base = baseline_ns[""]  # A baseline without args serves every args.
            row["ratio"] = (time_ns(row["run"]) / base
                            if base and not row["run"].get("error_occurred") else None)
        entry["counters"] = counter_names(r["run"] for r in entry["rows"])
    return groups


# ----------------------------------------------------------------------------- formatting

def pick_unit(value_ns):
    for unit in ("ns", "us", "ms"):
        if value_ns < 1000 * NS_PER_UNIT[unit]:
            return unit
    return "s"


def format_time(value_ns, unit=None):
    unit = unit or pick_unit(value_ns)
    return f"{format_number(value_ns / NS_PER_UNIT[unit])} {UNIT_LABEL[unit]}"


def format_number(value):
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.4g}k"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if magnitude < 100 else f"{value:.1f}"


def format_ratio(row, baseline):
    if row["run"].get("error_occurred"):
        return "error"
    if row["ratio"] is None:
        return "–"
    if row["variant"] == baseline:
        return "1.00 (baseline)"
    return ratio_text(row["ratio"])


def ratio_text(ratio):
    # Two decimals hide a 250x difference below 0.01; keep two significant digits there.
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def row_label(row):
    return row["variant"] + (f"/{row['args']}" if row["args"] else "")


def slug(group):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", group.replace("+", "_plus_"))


# ----------------------------------------------------------------------------- machine

def read_cmake_cache(build_dir):
    values = {}
    cache = build_dir / "CMakeCache.txt"
    if cache.exists():
        for line in cache.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"^([A-Za-z_]+):[A-Z]+=(.*)$", line)
            if match:
                values[match.group(1)] = match.group(2)
    return values


def compiler_from_cache(cache):
    compiler = cache.get("CMAKE_CXX_COMPILER")
    if not compiler:
        return "unknown"
    try:
        first = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                               timeout=10, check=False).stdout.splitlines()
        return first[0] if first else compiler
    except OSError:
        return compiler


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(build_dir, documents):
    context = documents[0].get("context", {}) if documents else {}
    cache = read_cmake_cache(build_dir)
    load = context.get("load_avg")
    return [
        ("CPU", cpu_model()),
        ("Cores", f"{os.cpu_count()} logical"
                  + (f", {context['mhz_per_cpu']} MHz" if "mhz_per_cpu" in context else "")),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("Compiler", context.get("compiler") or compiler_from_cache(cache)),
        ("Build type", cache.get("CMAKE_BUILD_TYPE") or "unknown (no CMakeCache.txt)"),
        ("Date", context.get("date") or datetime.datetime.now().isoformat(timespec="seconds")),
        ("Load average at start", ", ".join(f"{x:.2f}" for x in load) if load else "unknown"),
        ("CPU frequency scaling", {True: "enabled (timings may vary)", False: "disabled"}
         .get(context.get("cpu_scaling_enabled"), "unknown")),
        ("Benchmark library build", context.get("library_build_type", "unknown")),
    ]


# ----------------------------------------------------------------------------- output

def write_plots(groups, plot_dir):
    """Writes one bar chart per group; returns ({group: png path}, note or None)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}, ("matplotlib is not installed (Debian: apt-get install python3-matplotlib), "
                    "so this report has no plots.")
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for group, entry in groups.items():
        rows = [r for r in entry["rows"] if not r["run"].get("error_occurred")]
        if not rows:
            continue
        unit = pick_unit(min(time_ns(r["run"]) for r in rows))
        labels = [row_label(r) for r in rows]
        values = [time_ns(r["run"]) / NS_PER_UNIT[unit] for r in rows]
        figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
        colors = ["#4c72b0" if r["variant"] == entry["baseline"] else "#dd8452" for r in rows]
        bars = axes.barh(labels, values, color=colors)
        axes.invert_yaxis()
        axes.set_xlabel(f"time per op ({UNIT_LABEL[unit]}, lower is better)")
        axes.set_title(f"{group}: time per op"
                       + (f" (baseline {entry['baseline']})" if entry["baseline"] else ""))
        for bar, row in zip(bars, rows):
            note = f" {ratio_text(row['ratio'])}" if row["ratio"] is not None else ""
            axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, note,
                      va="center", fontsize=9)
        axes.set_xlim(0, max(values) * 1.18)
        figure.tight_layout()
        path = plot_dir / f"{slug(group)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths[group] = path
        counter_path = write_counter_plot(plt, group, entry, rows, plot_dir)
        if counter_path is not None:
            paths[group + " " + entry["plot_counter"]] = counter_path
    return paths, None


def write_counter_plot(plt, group, entry, rows, plot_dir):
    """The "plot:<group>" chart: the counter against numeric args, one line per variant."""
    counter = entry.get("plot_counter")
    if not counter:
        return None
    lines, baseline = {}, None
    for row in rows:
        value = row["run"].get(counter)
        if value is None:
            continue
        if row["variant"] == entry["baseline"] and not row["args"]:
            baseline = value
        elif row["args"].isdigit():
            lines.setdefault(row["variant"], []).append((int(row["args"]), value))
    if not lines:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    for variant, points in lines.items():
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    if baseline is not None:
        axes.axhline(baseline, color="#4c72b0", linestyle="--",
                     label=f"{entry['baseline']} (baseline)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("argument (e.g. concurrent writers)")
    axes.set_ylabel(counter)
    axes.set_title(f"{group}: {counter}")
    axes.legend()
    figure.tight_layout()
    path = plot_dir / f"{slug(group)}_{slug(counter)}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def group_table(entry):
    counters = entry["counters"]
    header = ["variant", "time/op", "ratio"] + counters
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in entry["rows"]:
        run = row["run"]
        if run.get("error_occurred"):
            cells = [row_label(row), "error: " + str(run.get("error_message", "")), "error"]
            cells += [""] * len(counters)
        else:
            cells = [row_label(row), format_time(time_ns(run)),
                     format_ratio(row, entry["baseline"])]
            cells += [format_number(run[c]) if c in run else "" for c in counters]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(out, groups, machine, plots, plot_note, options, failures):
    lines = ["# sqloop benchmark report", "",
             "Generated by `bench/report.py`" + (" in quick mode (timings are indicative only)"
                                                 if options.quick else "")
             + "; do not edit by hand. Each ratio is against the group's baseline measured in"
             " the same run; time per op is the real (wall-clock) time of one benchmark"
             " iteration"
             + (f", the run with the median time of {options.repetitions} interleaved rounds"
                if options.repetitions > 1 else "")
             + ". Conventions and how to add a group: see the top of `bench/report.py`; what the"
             " numbers mean: `docs/overhead.md`.", "", "## Machine", "",
             "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine]
    lines.append("")
    if failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in failures] + [""]
    if plot_note:
        lines += [f"> {plot_note}", ""]
    for group in sorted(groups):
        entry = groups[group]
        lines += [f"## {group}", ""]
        if entry["description"]:
            lines += [entry["description"], ""]
        lines.append(f"Baseline: `{entry['baseline']}`." if entry["baseline"] else
                     f"No `baseline:{group}` context entry, so no ratios.")
        lines.append("")
        lines += group_table(entry)
        lines.append("")
        if group in plots:
            relative = os.path.relpath(plots[group], out.parent)
            lines += [f"![{group}: time per op]({relative})", ""]
        counter_key = f"{group} {entry.get('plot_counter')}"
        if counter_key in plots:
            relative = os.path.relpath(plots[counter_key], out.parent)
            lines += [f"![{group}: {entry['plot_counter']}]({relative})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")


def print_summary(groups):
    rows = [("group", "variant", "time/op", "ratio", "allocs/op")]
    for group in sorted(groups):
        entry = groups[group]
        for row in entry["rows"]:
            run = row["run"]
            failed = run.get("error_occurred")
            rows.append((group, row_label(row),
                         "error" if failed else format_time(time_ns(run)),
                         format_ratio(row, entry["baseline"]),
                         format_number(run["allocs_per_op"])
                         if "allocs_per_op" in run and not failed else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                        for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def reexec_with_system_python_for_matplotlib():
    """Re-runs this script under /usr/bin/python3 when only that interpreter has matplotlib.

    Debian's python3-matplotlib is installed for the system interpreter; a python3 found first
    on PATH (pyenv, a virtualenv) may lack it. Plots are optional, so this is best effort.
    """
    system_python = Path("/usr/bin/python3")
    if os.environ.get("SQLOOP_REPORT_REEXEC") or not system_python.exists():
        return
    if os.path.realpath(sys.executable) == os.path.realpath(system_python):
        return
    try:
        import matplotlib  # noqa: F401  (only probing)
        return
    except ImportError:
        pass
    probe = subprocess.run([str(system_python), "-c", "import matplotlib"],
                           capture_output=True, check=False)
    if probe.returncode == 0:
        os.environ["SQLOOP_REPORT_REEXEC"] = "1"
        os.execv(str(system_python), [str(system_python), str(Path(__file__).resolve())]
                 + sys.argv[1:])


# End-to-end binaries that set up a server with 1,000 tenants, or thousands of databases, in
# every benchmark process: one round each keeps the default suite within its 10 minutes. Their
# spread between runs comes from the machine, not from sampling, and each run is itself long.
SINGLE_ROUND = {"sqloop_bench_http": 1, "sqloop_bench_registry": 1}


def main():
    options = parse_args()
    reexec_with_system_python_for_matplotlib()
    if options.repetitions is None:
        options.repetitions = 1 if options.quick else DEFAULT_REPETITIONS
    build_dir = options.build_dir.resolve()
    out = options.out.resolve()
    binaries = find_binaries(build_dir)
    if not binaries:
        print(f"report.py: no sqloop_bench_* executable under {build_dir / 'bench'}; "
              "build the suite first", file=sys.stderr)
        return 2
    results_dir = build_dir / "bench" / "results"
    started = time.monotonic()
    documents, failures = [], []
    for index, binary in enumerate(binaries, 1):
        try:
            document, binary_failures = run_binary(binary, results_dir, options, index,
                                                   len(binaries))
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            failures.append(str(error))
            print(f"   FAILED: {error}", flush=True)
            continue
        failures += binary_failures
        documents.append(document)
        with open(results_dir / f"{binary.name}.json", "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)

    merged = {"context": {}, "benchmarks": []}
    for document in documents:
        merged["context"].update(document["context"])
        merged["benchmarks"] += document["benchmarks"]
    raw = results_dir / "raw.json"
    with open(raw, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=2)
    plot_dir = out.parent / out.stem
    plot_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw, plot_dir / "raw.json")

    groups = build_groups(documents)
    plots, plot_note = write_plots(groups, plot_dir)
    write_markdown(out, groups, machine_info(build_dir, documents), plots, plot_note, options,
                   failures)
    print_summary(groups)
    print(f"\nreport: {out}  raw JSON: {raw}  ({time.monotonic() - started:.1f} s)")
    if plot_note:
        print(f"note: {plot_note}")
    if failures:
        print(f"\n{len(failures)} failure(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
