#!/usr/bin/env python3
"""Run sqloop's benchmark suite and write its report (docs/benchmarks.md), or compare two runs.

Usage:
    bench/report.py --build-dir build/release                 # the run of record
    bench/report.py --build-dir build/release --quick         # CI: seconds, under the build dir
    bench/report.py --build-dir build/release --compare OLD.json   # run, then compare with OLD
    bench/report.py --compare OLD.json NEW.json [--out FILE]  # compare two raw.json files only
    bench/report.py --from-raw docs/benchmarks/raw.json       # write a kept run's report again

What a run does:
    1. Finds every executable named sqloop_bench_* under BUILD_DIR/bench.
    2. Lists each binary's benchmarks (--benchmark_list_tests) and runs them one at a time
       (--benchmark_filter=^name$), with Google Benchmark's JSON written to a file per
       benchmark, printing a progress line as each result arrives. One process per benchmark
       costs a few milliseconds and makes progress reporting independent of stdout buffering;
       a crash is confined to one benchmark. Repetitions are interleaved rounds (every
       benchmark of the binary once, then again), so that a change in machine load during the
       run hits all variants of a group alike instead of skewing one ratio. Each process runs
       with address-space randomisation off (setarch -R, where the host allows it), so every
       round and every variant has the same code and heap layout: with it on, where the
       loader placed the code decided between two speeds of the same benchmark on the
       project's VM (registry_zipf/one_tenant: about 58 or 105 us per 256 requests by process),
       and the median of five rounds picked either. The Machine table says whether it was off.
    3. Keeps the raw JSON: BUILD_DIR/bench/results/<binary>.json (Google Benchmark's own
       format, all of that binary's runs) and raw.json (every binary merged, each benchmark
       tagged with its "binary" and "report_round"), copied next to the report
       (<report without .md>/raw.json). The host name is dropped, the executable is reduced to
       its file name, and the build and source directories become "<build>" and "<repo>", so
       neither the JSON nor the report carries a host name or an absolute path. The context
       gains what was measured: git_commit (short hash, "+dirty" with uncommitted changes),
       compiler, cxx_flags and build_type.
    4. Writes the Markdown report with one table per group (the run with the median of the
       rounds, plus the spread: min-max over the rounds), a latency table for groups with
       percentile counters, and PNG plots (bench/report_plots.py), and prints a short summary.
    5. Exits 1 if any benchmark reported an error (SkipWithError: "error_occurred" in the JSON)
       or a binary failed, 2 if no benchmark binary was found.

Where it writes: a full default run (no --quick, no --filter) is the run of record and goes to
docs/benchmarks.md and docs/benchmarks/. --quick or --filter write BUILD_DIR/benchmarks-quick.md
and BUILD_DIR/benchmarks-quick/ instead, and --quick refuses an --out outside the build
directory, so a quick run can never overwrite the run of record.

--quick sets --benchmark_min_time=0.01 (a double, in seconds, in Google Benchmark 1.7.1), one
round and SQLOOP_BENCH_QUICK=1 in the benchmarks' environment (the HTTP binary shortens its wrk
runs and its idle-connection count), so the whole suite runs in under two minutes in CI and
every correctness check inside the benchmarks still runs. The default is 5 rounds at Google
Benchmark's default minimum time (0.5 s) for most benchmarks (each about a second with its
calibration and process setup), one round of the HTTP binary, of the load curves' one-second
steps, and of the registry's long ones (some of whose processes create 100,000 tenants
anew), so a full run takes tens of minutes on a 2-core machine.

Compare mode (--compare OLD [NEW]): for every benchmark in both runs, the median of its rounds
in each, the spread (min-max), and NEW/OLD. A change is flagged when the two spreads do not
overlap and it exceeds NOISE_THRESHOLD (5 %); with a single round on either side the spread is
unknown, so only changes beyond SINGLE_ROUND_THRESHOLD (25 %) are flagged. The table is
printed and written to --out (default: compare.md beside NEW; after a run, under the build
directory).

Conventions a benchmark binary follows to plug in (nothing here is specific to one group):
    * Binary name: sqloop_bench_<anything>, built under BUILD_DIR/bench.
    * Benchmark name: <family>/<variant>[/<args>...], e.g. dispatch/coro_pool,
      alloc/arena, loop/sqloop/64. Google Benchmark's own suffixes (min_time:, iterations:,
      repeats:, real_time, process_time, manual_time) are ignored for grouping.
    * Group: <family> followed by the "+modifier" part of <variant>, if any. So
      dispatch/coro+syscalls is in group "dispatch+syscalls" and dispatch/coro in "dispatch".
      Results are only compared within a group.
    * Baseline: the custom context entry "baseline:<group>" names the baseline variant
      (benchmark::AddCustomContext("baseline:dispatch", "manual")). Each row's ratio is its
      value divided by the baseline variant's with the same <args>, measured in the same run
      (or, if the baseline variant has no <args>, that one run: e.g. sqlite_write/plain_full
      against sqlite_write/sqloop/64). A group without a baseline entry has no ratios.
    * "metric:<group>" = "<counter>": the group measures that counter, not time (memory
      benchmarks: "metric:http_idle" = "rss_bytes_per_connection"). Its table, ratios, plot
      and comparison use the counter; a counter whose name contains "bytes" is shown in bytes.
    * "floor:<group>" = "<variant>": a variant that does the group's work without what is being
      compared (dispatch/floor: the fake I/O calls alone); every row is also shown as a
      multiple of it (column "× floor").
    * Optional context entries: "description:<group>" (one sentence printed under the group's
      heading: what one op is), "compiler" (otherwise read from BUILD_DIR/CMakeCache.txt), and
      "plot:<group>" = "<counter>": an extra line chart of that counter against the numeric
      <args> of each variant, with the baseline as a horizontal line.
    * "load:<group>" = "<throughput counter>": the group is a latency-against-offered-load
      curve (sqloop_bench_load). Each variant is one system, its numeric <args> the offered rate
      per second (or the counter offered_per_s), and each run carries the achieved throughput
      counter, p50_us, p99_us, p99_9_us and the share "unserved". Instead of the time table
      the report shows where each system saturated (load_summary) and every step, and plots p50
      and p99 against the achieved throughput, one line per system (report_plots.load_chart).
    * Latency counters named [<series>_]p50_us, p90_us, p99_us, p99_9_us, max_us (e.g.
      read_p99_us) go to the group's latency table. A binary that finds the environment
      variable SQLOOP_BENCH_LATENCY_FILE set writes its latency distribution there, one line
      "<series> <quantile> <microseconds>" per point (overwritten by each call of the
      benchmark function, so the measured run's remains); the report keeps it in the run as
      "latency_cdf" and draws a CDF per group.
    * A variant's "+modifier" may also set its process's environment (MODIFIER_ENVIRONMENT):
      "+thp" runs with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, glibc's heap on transparent huge
      pages, a setting read only when a process starts (registry_zipf/one_tenant+thp).
    * Time per op is Google Benchmark's real_time per iteration (an op is one benchmark
      iteration; the description says what that is). Every other user counter is a column;
      allocs_per_op (heap allocations per iteration) comes first.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Google Benchmark's standard fields in a JSON run; every other numeric key is a user counter.
STANDARD_FIELDS = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type",
    "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
    "time_unit", "aggregate_name", "aggregate_unit", "error_occurred", "error_message",
    "label", "binary", "report_round", "latency_cdf",
}
# Name components Google Benchmark appends for run settings; they do not name a variant.
SETTING_COMPONENT = re.compile(r"^(min_time:|min_warmup_time:|iterations:|repeats:|"
                               r"real_time$|process_time$|manual_time$)")
# [<series>_]p50_us ... max_us: latency percentiles, shown in their own table.
LATENCY_COUNTER = re.compile(r"^(?:(?P<series>[a-z]+)_)?(?P<stat>p50|p90|p99|p99_9|max)_us$")
LATENCY_STATS = ("p50", "p90", "p99", "p99_9", "max")
# An absolute path with at least two components that is not part of a URL or a word.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<>-])/(?:[\w.-]+/)+[\w.-]*")
NS_PER_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
UNIT_LABEL = {"ns": "ns", "us": "µs", "ms": "ms", "s": "s"}
QUICK_MIN_TIME_S = "0.01"      # Long enough to run every check, short enough for CI.
DEFAULT_REPETITIONS = 5        # Odd, so the median is a measured run.
BENCHMARK_TIMEOUT_S = 600      # One benchmark may not take the whole budget.
NOISE_THRESHOLD = 0.05         # Compare: smaller changes are never flagged.
SINGLE_ROUND_THRESHOLD = 0.25  # Compare: the bar when a side has one round (no spread known).
REGEX_SPECIALS = set(".[]{}()*+?^$|\\")

# End-to-end binaries that set up a server with 1,000 tenants in every benchmark process: one
# round each keeps the default suite within its budget. Their spread between runs comes from
# the machine, not from sampling, and each run is itself long. The load curves
# (sqloop_bench_load) take one round too: each of their ~60 steps is a fixed one-second
# schedule, and a curve of neighbouring steps shows its own noise.
SINGLE_ROUND = {"sqloop_bench_http": 1, "sqloop_bench_load": 1}
# Benchmarks of other binaries that run one round for the same reason: each process creates
# thousands of databases or a 1 GiB file, or opens 100,000 tenants at once. The registry's
# others take every round: a reopen is a single sample's worth of noise on a shared machine,
# and processes of the 100,000-tenant Zipf traces differ by more than a fifth (their tenants
# are copies of one, so a process of them takes under a minute).
# The environment a variant's "+modifier" adds to its process (the module comment).
MODIFIER_ENVIRONMENT = {"+thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}
SINGLE_ROUND_BENCHMARKS = re.compile(
    r"^(registry_burst/|registry_reopen/closed_1gb|registry_memory/|registry_open_all/)")
# Load curves: a step is sustained when it achieved at least this share of the offered rate,
# left no request unserved, and kept its p99 within P99_GROWTH_MAX times the variant's p99 at
# its lowest step (beyond that, queueing has taken over: "p99 explodes").
SUSTAINED_FRACTION = 0.9
P99_GROWTH_MAX = 10.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", type=Path,
                        help="CMake build directory (release build recommended); "
                             "not needed to compare two files")
    parser.add_argument("--quick", action="store_true",
                        help="tiny minimum time, one round: seconds, for CI; writes under "
                             "the build directory only")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file to write (report: plots go to <out without .md>/; "
                             "default docs/benchmarks.md for a full run, else under the build "
                             "directory)")
    parser.add_argument("--filter", default=None,
                        help="only run benchmarks whose name matches this Python regex")
    parser.add_argument("--repetitions", type=int, default=None,
                        help=f"interleaved rounds (default {DEFAULT_REPETITIONS}, "
                             "1 with --quick)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="JSON",
                        help="OLD.json: run, then compare with it; OLD.json NEW.json: only "
                             "compare the two")
    parser.add_argument("--from-raw", type=Path, metavar="JSON",
                        help="run nothing: write the report (default docs/benchmarks.md) and "
                             "its plots again from a run's raw.json, as after a change to the "
                             "report's format")
    options = parser.parse_args(argv)
    if options.compare and len(options.compare) > 2:
        parser.error("--compare takes OLD.json or OLD.json NEW.json")
    comparing_files = options.compare and len(options.compare) == 2
    if options.build_dir is None and not comparing_files and not options.from_raw:
        parser.error("--build-dir is required unless comparing two files or writing a report "
                     "from a raw.json")
    return options


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


def benchmark_environment(options, **extra):
    """The environment of a benchmark process: SQLOOP_BENCH_QUICK=1 with --quick (a binary may
    register fewer benchmarks then, e.g. two steps per load curve, so listing sees it too)."""
    environment = dict(os.environ, **extra)
    if options.quick:
        environment["SQLOOP_BENCH_QUICK"] = "1"
    return environment


def list_benchmarks(binary, options):
    result = subprocess.run([str(binary), "--benchmark_list_tests=true"], capture_output=True,
                            text=True, timeout=BENCHMARK_TIMEOUT_S, check=False,
                            env=benchmark_environment(options))
    if result.returncode != 0:
        raise RuntimeError(f"{binary.name} --benchmark_list_tests failed: "
                           f"{result.stderr.strip()[-500:]}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def exact_filter(name):
    """A regex matching only `name` (Benchmark 1.7.1 uses std::regex or POSIX ERE)."""
    return "^" + "".join("\\" + c if c in REGEX_SPECIALS else c for c in name) + "$"


def read_latency_file(path):
    """{series: [[quantile, microseconds], ...]} from a SQLOOP_BENCH_LATENCY_FILE, or None."""
    if not path.exists():
        return None
    series = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) == 3:
            series.setdefault(words[0], []).append([float(words[1]), float(words[2])])
    return series or None


def aslr_off_prefix():
    """["setarch", "-R"] if this host lets a process turn address-space randomisation off."""
    setarch = shutil.which("setarch")
    if setarch is None:
        return []
    probe = subprocess.run([setarch, "-R", "true"], capture_output=True, check=False)
    return [setarch, "-R"] if probe.returncode == 0 else []


def run_one(binary, name, out_file, options):
    command = [*options.aslr_prefix, str(binary), f"--benchmark_filter={exact_filter(name)}",
               f"--benchmark_out={out_file}", "--benchmark_out_format=json",
               "--benchmark_format=console", "--benchmark_color=false"]
    if options.quick:
        command.append(f"--benchmark_min_time={QUICK_MIN_TIME_S}")
    latency_file = out_file.with_suffix(".latency.txt")
    family, _, _, group = split_name(name)
    modifier = group[len(family):]
    environment = benchmark_environment(options, SQLOOP_BENCH_LATENCY_FILE=str(latency_file),
                                        **MODIFIER_ENVIRONMENT.get(modifier, {}))
    for stale in (out_file, latency_file):
        stale.unlink(missing_ok=True)  # Never read a previous run's result by mistake.
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=environment,
                                timeout=BENCHMARK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {BENCHMARK_TIMEOUT_S} s"
    if result.returncode != 0 or not out_file.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return None, f"exit status {result.returncode}: {' | '.join(tail)}"
    with open(out_file, encoding="utf-8") as f:
        data = json.load(f)
    cdf = read_latency_file(latency_file)
    if cdf is not None:
        for run in data.get("benchmarks", []):
            run["latency_cdf"] = cdf
    return data, None


def run_binary(binary, results_dir, options, index, total):
    """Runs every benchmark of `binary` in interleaved rounds.

    Returns (one JSON document in Google Benchmark's format with every run, failures).
    """
    names = [n for n in list_benchmarks(binary, options)
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
            if round_index > 1 and SINGLE_ROUND_BENCHMARKS.match(name):
                continue
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
    parts = []
    for run in runs:
        if run.get("run_type") == "aggregate":
            continue
        if run.get("error_occurred"):
            parts.append(f"ERROR: {run.get('error_message')}")
            continue
        text = format_time(time_ns(run))
        allocs = run.get("allocs_per_op")
        if allocs is not None:
            text += f"  allocs/op={format_number(allocs)}"
        parts.append(text)
    return "; ".join(parts) or "no result"


# ----------------------------------------------------------------------------- provenance

def git_commit(repo_root):
    """The short hash of HEAD, with "+dirty" if tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True,
                              text=True, timeout=30, check=False)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not found)"
    return head.stdout.strip() + ("+dirty" if dirty else "")


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
        return first[0] if first else Path(compiler).name
    except OSError:
        return Path(compiler).name


def build_flags(cache):
    """CMAKE_CXX_FLAGS plus the flags of the build type, as the compiler sees them."""
    build_type = cache.get("CMAKE_BUILD_TYPE", "")
    flags = [cache.get("CMAKE_CXX_FLAGS", "")]
    if build_type:
        flags.append(cache.get(f"CMAKE_CXX_FLAGS_{build_type.upper()}", ""))
    return " ".join(f for f in flags if f.strip()) or "(none)"


def provenance(build_dir, context):
    """What was measured, for the context of raw.json and the report's machine section."""
    cache = read_cmake_cache(build_dir)
    return {
        "git_commit": git_commit(REPO_ROOT),
        "build_type": cache.get("CMAKE_BUILD_TYPE") or "unknown (no CMakeCache.txt)",
        "compiler": context.get("compiler") or compiler_from_cache(cache),
        "cxx_flags": build_flags(cache),
    }


def scrub(value, replacements):
    """`value` (any JSON value) with every replacement applied to every string in it."""
    if isinstance(value, str):
        for old, new in replacements:
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [scrub(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, replacements) for k, v in value.items()}
    return value


def scrub_document(document, build_dir):
    """A copy of a Google Benchmark document without host name or machine-specific paths.

    Drops context.host_name, keeps only the file name of context.executable, and rewrites the
    build directory, the source tree and the home directory to placeholders in every string.
    """
    roots = [(str(build_dir), "<build>"), (str(REPO_ROOT), "<repo>"),
             (str(Path.home()), "<home>")]
    roots.sort(key=lambda pair: -len(pair[0]))  # The build dir usually sits inside the repo.
    context = dict(document.get("context", {}))
    context.pop("host_name", None)
    if "executable" in context:
        context["executable"] = Path(context["executable"]).name
    return scrub({"context": context, "benchmarks": document.get("benchmarks", [])}, roots)


# ----------------------------------------------------------------------------- analysis

def time_ns(run):
    return run["real_time"] * NS_PER_UNIT.get(run.get("time_unit", "ns"), 1.0)


def metric_value(run, metric):
    """The value a row is measured by: time per op in ns, or the group's metric counter."""
    return time_ns(run) if metric is None else run.get(metric)


def split_name(run_name):
    """'dispatch/coro+syscalls/64' -> ('dispatch', 'coro+syscalls', '64', 'dispatch+syscalls')."""
    parts = [p for p in run_name.split("/") if not SETTING_COMPONENT.match(p)]
    family = parts[0]
    variant = parts[1] if len(parts) > 1 else ""
    args = "/".join(parts[2:])
    modifier = variant[variant.index("+"):] if "+" in variant else ""
    return family, variant, args, family + modifier


def group_of(run):
    return split_name(run.get("run_name", run["name"]))[3]


def by_run_name(runs):
    """{run name: [its runs]}, in first-seen order."""
    by_name = {}
    for run in runs:
        by_name.setdefault(run.get("run_name", run["name"]), []).append(run)
    return by_name


def measured(run):
    """Whether `run` is a round that measured something: not an aggregate, not an error."""
    return run.get("run_type") != "aggregate" and not run.get("error_occurred")


def rounds_of(runs):
    """{run name: [every measured round]}, in first-seen order."""
    return {name: [r for r in candidates if measured(r)]
            for name, candidates in by_run_name(runs).items()}


def select_runs(runs, metric_of=lambda run: None):
    """{run name: (chosen run, [metric of every round])}, in first-seen order.

    The chosen run is the round with the median metric: a measured run, so its counters stay
    consistent with its time. A run with an error always wins, so an error is never hidden. If
    a binary was run with Google Benchmark's own repetitions, its "median" aggregate is used.
    """
    chosen = {}
    for name, candidates in by_run_name(runs).items():
        metric = metric_of(candidates[0])
        errors = [r for r in candidates if r.get("error_occurred")]
        medians = [r for r in candidates if r.get("aggregate_name") == "median"]
        plain = [r for r in candidates
                 if measured(r) and metric_value(r, metric) is not None]
        plain.sort(key=lambda r: metric_value(r, metric))
        samples = [metric_value(r, metric) for r in plain]
        if errors:
            chosen[name] = (errors[0], samples)
        elif medians:
            chosen[name] = (medians[0], samples)
        elif plain:
            chosen[name] = (plain[(len(plain) - 1) // 2], samples)
    return chosen


def merged_context(documents):
    context = {}
    for document in documents:
        context.update(document.get("context", {}))
    return context


def build_groups(documents):
    """{group: {"baseline", "description", "metric", "plot_counter", "rows", "counters"}}.

    Each row: family, variant, args, run (the median round), samples (the metric of every
    round, sorted), value (the metric of `run`) and ratio (against the baseline, or None).
    """
    contexts = merged_context(documents)

    def metric_of(run):
        return contexts.get(f"metric:{group_of(run)}")

    groups = {}
    for document in documents:
        rounds = rounds_of(document["benchmarks"])
        for name, (run, samples) in select_runs(document["benchmarks"], metric_of).items():
            family, variant, args, group = split_name(name)
            entry = groups.setdefault(group, {
                "baseline": contexts.get(f"baseline:{group}"),
                "description": contexts.get(f"description:{group}", ""),
                "metric": contexts.get(f"metric:{group}"),
                "floor": contexts.get(f"floor:{group}"),
                "plot_counter": contexts.get(f"plot:{group}"),
                "load": contexts.get(f"load:{group}"),
                "rows": []})
            value = None if run.get("error_occurred") else metric_value(run, entry["metric"])
            entry["rows"].append({"family": family, "variant": variant, "args": args,
                                  "run": run, "samples": samples, "value": value,
                                  "rounds": rounds.get(name, [run])})
    for entry in groups.values():
        if entry["load"]:  # Steps of different systems share no args: no ratio per row.
            for row in entry["rows"]:
                row["ratio"] = row["floor_ratio"] = None
        else:
            add_ratios(entry)
        entry["counters"] = counter_names(r["run"] for r in entry["rows"])
    return groups


def add_ratios(entry):
    """Sets each row's "ratio" (to the baseline) and "floor_ratio" (to the floor, if any), and
    "paired" and "floor_paired": the same ratios round by round, sorted (paired_ratios)."""
    for key, paired_key, variant in (("ratio", "paired", entry["baseline"]),
                                     ("floor_ratio", "floor_paired", entry["floor"])):
        reference = {}
        for row in entry["rows"]:
            if variant is not None and row["variant"] == variant and row["value"]:
                reference[row["args"]] = row
        for row in entry["rows"]:
            base = reference.get(row["args"])
            if base is None and set(reference) == {""}:
                base = reference[""]  # A reference without args serves every args.
            row[key] = (row["value"] / base["value"]
                        if base and row["value"] is not None else None)
            row[paired_key] = (paired_ratios(row, base, entry["metric"])
                               if base and base is not row else [])


def paired_ratios(row, base, metric):
    """The row's metric divided by the baseline's in the same round, for every round both have
    (report_round), sorted; [] with fewer than two such rounds. A slow stretch of the host
    slows the neighbouring variants of one round alike, so the ratio within a round moves less
    than the ratio of the two medians, which may come from different rounds."""
    def by_round(r):
        values = {}
        for run in r["rounds"]:
            value = metric_value(run, metric)
            if "report_round" in run and value:
                values[run["report_round"]] = value
        return values
    mine, theirs = by_round(row), by_round(base)
    common = sorted(set(mine) & set(theirs))
    if len(common) < 2:
        return []
    return sorted(mine[k] / theirs[k] for k in common)


def counter_names(runs):
    names = set()
    for run in runs:
        names.update(k for k, v in run.items()
                     if k not in STANDARD_FIELDS and isinstance(v, (int, float))
                     and not isinstance(v, bool))
    ordered = sorted(names)
    if "allocs_per_op" in names:
        ordered.remove("allocs_per_op")
        ordered.insert(0, "allocs_per_op")
    return ordered


def latency_columns(counters):
    """[(series, stat, counter)] for the latency counters, by series then percentile."""
    found = []
    for counter in counters:
        match = LATENCY_COUNTER.match(counter)
        if match:
            series = match.group("series") or ""
            found.append((series, LATENCY_STATS.index(match.group("stat")), counter))
    found.sort()
    return [(series, LATENCY_STATS[stat], counter) for series, stat, counter in found]


def use_log_scale(values, span_max=20.0):
    """True when the positive values span more than `span_max`x: a linear axis would hide
    the small ones."""
    positive = [v for v in values if v is not None and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > span_max


def load_curves(entry):
    """{variant: [step]} of a load group, each variant's steps by offered rate.

    A step: offered and achieved (per second), p50, p99, p99_9 (µs), unserved (a fraction) and
    sustained (see SUSTAINED_FRACTION). Rows with an error or without the counters are left out.
    """
    throughput = entry.get("load") or "achieved_per_s"
    curves = {}
    for row in entry["rows"]:
        run = row["run"]
        if run.get("error_occurred") or throughput not in run or "p99_us" not in run:
            continue
        offered = run.get("offered_per_s")
        if offered is None and row["args"].isdigit():
            offered = float(row["args"])
        if offered is None:
            continue
        curves.setdefault(row["variant"], []).append({
            "offered": offered, "achieved": run[throughput], "p50": run.get("p50_us"),
            "p99": run["p99_us"], "p99_9": run.get("p99_9_us"),
            "unserved": run.get("unserved", 0.0)})
    for steps in curves.values():
        steps.sort(key=lambda step: step["offered"])
        p99_floor = steps[0]["p99"]
        for step in steps:
            step["sustained"] = (step["achieved"] >= SUSTAINED_FRACTION * step["offered"]
                                 and step["unserved"] == 0
                                 and step["p99"] <= P99_GROWTH_MAX * p99_floor)
    return curves


def load_summary(curves, baseline):
    """[(variant, sustained offered rate or None, its p99, max achieved, ratio to baseline's)].

    A variant's sustained rate is its highest sustained step (None if it sustained none): where
    it saturated. A lower step may have failed (one round of one second: a disk stall shows),
    which the steps table marks. Max achieved is its capacity.
    """
    capacity = {variant: max(step["achieved"] for step in steps)
                for variant, steps in curves.items()}
    summary = []
    for variant, steps in curves.items():
        sustained = None
        for step in steps:
            if step["sustained"]:
                sustained = step
        base = capacity.get(baseline)
        summary.append((variant, sustained["offered"] if sustained else None,
                        sustained["p99"] if sustained else None, capacity[variant],
                        capacity[variant] / base if base else None))
    return summary


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
    if magnitude >= 1e9:
        return f"{value / 1e9:.3g}G"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.4g}k"
    if float(value).is_integer():
        return str(int(value))
    if magnitude >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}" if magnitude < 100 else f"{value:.1f}"


def format_bytes(value):
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def format_metric(value, metric):
    """A metric value as text: a time for None, bytes for a *bytes* counter, else a number."""
    if metric is None:
        return format_time(value)
    return format_bytes(value) if "bytes" in metric else format_number(value)


def format_spread(samples, metric):
    """'min–max' of the rounds, or '–' with fewer than two rounds."""
    if len(samples) < 2:
        return "–"
    if metric is None:
        unit = pick_unit(min(samples))
        low = format_number(min(samples) / NS_PER_UNIT[unit])
        return f"{low}–{format_time(max(samples), unit)}"
    return f"{format_metric(min(samples), metric)}–{format_metric(max(samples), metric)}"


def format_ratio(row, baseline):
    if row["run"].get("error_occurred"):
        return "error"
    if row["ratio"] is None:
        return "–"
    if row["variant"] == baseline:
        return "1.00 (baseline)"
    return ratio_text(row["ratio"])


def format_paired(ratios):
    """'median× (min–max)' of a row's ratios per round, or '–'."""
    if not ratios:
        return "–"
    return (f"{ratio_text(statistics.median(ratios))} "
            f"({ratio_text(ratios[0])[:-1]}–{ratio_text(ratios[-1])})")


def ratio_text(ratio):
    # Two decimals hide a 250x difference below 0.01; keep two significant digits there.
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def row_label(row):
    return row["variant"] + (f"/{row['args']}" if row["args"] else "")


def slug(group):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", group.replace("+", "_plus_"))


# ----------------------------------------------------------------------------- machine

def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(context):
    load = context.get("load_avg")
    return [
        ("Commit", context.get("git_commit", "unknown")),
        ("Compiler", context.get("compiler", "unknown")),
        ("Flags", f"`{context.get('cxx_flags', 'unknown')}`"),
        ("Build type", context.get("build_type", "unknown")),
        ("CPU", cpu_model()),
        ("Cores", f"{context.get('num_cpus', os.cpu_count())} logical"
                  + (f", {context['mhz_per_cpu']} MHz" if "mhz_per_cpu" in context else "")),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("Date", context.get("date") or datetime.datetime.now().isoformat(timespec="seconds")),
        ("Load average at start", ", ".join(f"{x:.2f}" for x in load) if load else "unknown"),
        ("CPU frequency scaling", {True: "enabled (timings may vary)", False: "disabled"}
         .get(context.get("cpu_scaling_enabled"), "unknown")),
        ("Benchmark library build", context.get("library_build_type", "unknown")),
        ("Address-space randomisation", {"off": "off (setarch -R): one layout for every process",
                                         "on": "on (timings may vary by process)"}
         .get(context.get("aslr"), "unknown")),
    ]


# ----------------------------------------------------------------------------- report

def group_table(entry):
    metric = entry["metric"]
    latency = {counter for _, _, counter in latency_columns(entry["counters"])}
    counters = [c for c in entry["counters"] if c not in latency and c != metric]
    floor = ["× floor"] if entry["floor"] else []
    if any(r.get("floor_paired") for r in entry["rows"]):
        floor.append("× floor per round (min–max)")
    paired = ["ratio per round (min–max)"] if any(r.get("paired") for r in entry["rows"]) else []
    header = (["variant", metric or "time/op", "spread (min–max)", "ratio"] + paired + floor
              + counters)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in entry["rows"]:
        run = row["run"]
        if run.get("error_occurred"):
            cells = [row_label(row), "error: " + str(run.get("error_message", "")), "", "error"]
            cells += [""] * (len(paired) + len(floor) + len(counters))
        else:
            cells = [row_label(row),
                     format_metric(row["value"], metric) if row["value"] is not None else "",
                     format_spread(row["samples"], metric), format_ratio(row, entry["baseline"])]
            if paired:
                cells.append(format_paired(row.get("paired")))
            if floor:
                cells.append(ratio_text(row["floor_ratio"]) if row["floor_ratio"] else "–")
            if len(floor) > 1:
                cells.append(format_paired(row.get("floor_paired")))
            cells += [format_number(run[c]) if c in run else "" for c in counters]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def median_over_rounds(row, counter):
    """The median of `counter` over the row's rounds that have it (the lower one of two), or
    None."""
    values = sorted(r[counter] for r in row["rounds"] if counter in r)
    return values[(len(values) - 1) // 2] if values else None


def latency_table(entry):
    """The latency percentiles (µs), each the median over the rounds: one column per series and
    stat. Not the percentiles of the round with the median time: a paced variant's time per
    operation is its arrival rate in every round, so that round would be any round, and one
    stall of the machine in it would stand for the whole run."""
    columns = latency_columns(entry["counters"])
    if not columns:
        return []
    header = ["variant"] + [(f"{series} " if series else "") + stat.replace("_", ".")
                            for series, stat, _ in columns]
    lines = ["Latency (µs, each percentile the median of its value over the rounds):", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|"]
    for row in entry["rows"]:
        if row["run"].get("error_occurred"):
            continue
        cells = [row_label(row)]
        for _, _, counter in columns:
            value = median_over_rounds(row, counter)
            cells.append(format_number(value) if value is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def load_tables(entry):
    """A load group's summary (where each variant saturated) and its steps, as Markdown."""
    curves = load_curves(entry)
    if not curves:
        return []
    lines = [f"Saturation: a step is sustained when it achieved at least {SUSTAINED_FRACTION:.0%}"
             " of the offered rate, left nothing unserved and kept p99 within "
             f"{P99_GROWTH_MAX:g}× the variant's p99 at its lowest step. One round.", "",
             "| variant | sustained up to (offered/s) | p99 there (µs) | max achieved/s | "
             "max achieved vs baseline |", "|---|---:|---:|---:|---:|"]
    for variant, sustained, p99, capacity, ratio in load_summary(curves, entry["baseline"]):
        label = variant + (" (baseline)" if variant == entry["baseline"] else "")
        lines.append(f"| {label} | {format_number(sustained) if sustained else 'none'} | "
                     f"{format_number(p99) if p99 is not None else '–'} | "
                     f"{format_number(capacity)} | {ratio_text(ratio) if ratio else '–'} |")
    lines += ["", "Steps (latency in µs from each request's intended start; unserved: share of "
              "the scheduled requests never issued, counted in the percentiles with the time "
              "they had waited when the step ended):", "",
              "| variant | offered/s | achieved/s | p50 | p99 | p99.9 | unserved | sustained |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for variant, steps in curves.items():
        for step in steps:
            cells = [variant, format_number(step["offered"]), format_number(step["achieved"]),
                     format_number(step["p50"]), format_number(step["p99"]),
                     format_number(step["p99_9"]) if step["p99_9"] is not None else "",
                     f"{step['unserved']:.1%}", "yes" if step["sustained"] else "**no**"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(out, groups, context, plots, plot_note, options, failures):
    lines = ["# sqloop benchmark report", "",
             "Generated by `bench/report.py`" + (" in quick mode (timings are indicative only)"
                                                 if options.quick else "")
             + "; do not edit by hand. Each ratio is against the group's baseline measured in"
             " the same run; time per op is the real (wall-clock) time of one benchmark"
             " iteration"
             + (f", the run with the median time of {options.repetitions} interleaved rounds,"
                " and the spread is the minimum and maximum over those rounds"
                if options.repetitions > 1 else "")
             + ". Conventions and how to add a group: see the top of `bench/report.py`; what the"
             " numbers mean: `docs/overhead.md`.", "", "## Machine", "",
             "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine_info(context)]
    lines.append("")
    if failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in failures] + [""]
    if plot_note:
        lines += [f"> {plot_note}", ""]
    for group in sorted(groups):
        lines += group_section(group, groups[group], plots, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")


def group_section(group, entry, plots, out):
    lines = [f"## {group}", ""]
    if entry["description"]:
        lines += [entry["description"], ""]
    lines.append(f"Baseline: `{entry['baseline']}`." if entry["baseline"] else
                 f"No `baseline:{group}` context entry, so no ratios.")
    if entry["floor"]:
        lines[-1] += f" Floor: `{entry['floor']}`."
    lines.append("")
    if entry.get("load"):  # A load curve: its steps, not a time per op, are the result.
        lines += load_tables(entry)
    else:
        lines += group_table(entry)
        lines.append("")
        lines += latency_table(entry)
    for title, path in plots.get(group, []):
        lines += [f"![{group}: {title}]({os.path.relpath(path, out.parent)})", ""]
    return lines


def print_summary(groups):
    rows = [("group", "variant", "value", "ratio", "allocs/op")]
    for group in sorted(groups):
        entry = groups[group]
        for row in entry["rows"]:
            run = row["run"]
            failed = run.get("error_occurred")
            rows.append((group, row_label(row),
                         "error" if failed or row["value"] is None
                         else format_metric(row["value"], entry["metric"]),
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


# ----------------------------------------------------------------------------- compare

def run_stats(document, context):
    """{run name: (metric, median, min, max, rounds)} over the rounds of each benchmark.

    `context` says which groups measure a counter ("metric:<group>"): the newer run's, so that
    both runs are compared by the same measure.
    """
    def metric_of(run):
        return context.get(f"metric:{group_of(run)}")

    stats = {}
    for name, (run, samples) in select_runs(document.get("benchmarks", []), metric_of).items():
        if run.get("error_occurred") or not samples:
            continue
        stats[name] = (metric_of(run), statistics.median(samples), min(samples), max(samples),
                       len(samples))
    return stats


def is_significant(old, new):
    """True when NEW differs from OLD by more than the noise (see the module comment)."""
    _, old_median, old_min, old_max, old_rounds = old
    _, new_median, new_min, new_max, new_rounds = new
    if old_median <= 0:
        return False
    change = abs(new_median / old_median - 1)
    if min(old_rounds, new_rounds) < 2:
        return change > SINGLE_ROUND_THRESHOLD
    return (new_min > old_max or new_max < old_min) and change > NOISE_THRESHOLD


def compare_documents(old_document, new_document):
    """(Markdown lines of the comparison table, number of flagged changes)."""
    old_context, new_context = old_document.get("context", {}), new_document.get("context", {})
    context = {**old_context, **new_context}
    old, new = run_stats(old_document, context), run_stats(new_document, context)
    lines = ["# sqloop benchmark comparison", "",
             f"Old: commit {old_context.get('git_commit', 'unknown')}, "
             f"{old_context.get('date', 'date unknown')}. "
             f"New: commit {new_context.get('git_commit', 'unknown')}, "
             f"{new_context.get('date', 'date unknown')}.", "",
             "Each value is the median of the run's rounds, with the spread (min–max) beside "
             "it. A change is flagged when the spreads do not overlap and it exceeds "
             f"{NOISE_THRESHOLD:.0%} (with one round on either side, when it exceeds "
             f"{SINGLE_ROUND_THRESHOLD:.0%}). Time: lower is better.", "",
             "| benchmark | old | old spread | new | new spread | new/old | |",
             "|---|---:|---:|---:|---:|---:|---|"]
    flagged = 0
    for name in [n for n in new if n in old]:
        metric = new[name][0]
        ratio = new[name][1] / old[name][1] if old[name][1] else float("nan")
        mark = ""
        if is_significant(old[name], new[name]):
            flagged += 1
            worse = "larger" if metric else "slower"
            better = "smaller" if metric else "faster"
            mark = f"**{worse if ratio > 1 else better}**"
        cells = [name, format_metric(old[name][1], metric),
                 format_spread([old[name][2], old[name][3]], metric) if old[name][4] > 1
                 else "–",
                 format_metric(new[name][1], metric),
                 format_spread([new[name][2], new[name][3]], metric) if new[name][4] > 1
                 else "–",
                 ratio_text(ratio), mark]
        lines.append("| " + " | ".join(cells) + " |")
    only_old = [n for n in old if n not in new]
    only_new = [n for n in new if n not in old]
    if only_old:
        lines += ["", "Only in the old run: " + ", ".join(f"`{n}`" for n in only_old) + "."]
    if only_new:
        lines += ["", "Only in the new run: " + ", ".join(f"`{n}`" for n in only_new) + "."]
    lines += ["", f"{flagged} change(s) larger than the noise."]
    return lines, flagged


def write_comparison(old_path, new_path, out):
    with open(old_path, encoding="utf-8") as f:
        old_document = json.load(f)
    with open(new_path, encoding="utf-8") as f:
        new_document = json.load(f)
    lines, _ = compare_documents(old_document, new_document)
    text = "\n".join(lines) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"comparison: {display_path(out)}")


# ----------------------------------------------------------------------------- main

def display_path(path):
    """`path` relative to the working directory when it is under it (for messages)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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


def report_path(options, build_dir):
    """Where the report goes, or None if --quick was asked to write outside the build dir."""
    if options.out is None:
        if options.quick or options.filter:
            return build_dir / "benchmarks-quick.md"
        return REPO_ROOT / "docs" / "benchmarks.md"
    out = options.out.resolve()
    if options.quick and build_dir not in out.parents:
        return None
    return out


def run_suite(options, build_dir):
    """Runs every binary; returns (scrubbed merged document, failures) or None if none."""
    binaries = find_binaries(build_dir)
    if not binaries:
        return None
    results_dir = build_dir / "bench" / "results"
    documents, failures = [], []
    options.aslr_prefix = aslr_off_prefix()
    # The commit is read now, when the binaries were just built from it: the tree may change
    # while a run of half an hour measures them, and the run still measured this one.
    measured = provenance(build_dir, {})
    for index, binary in enumerate(binaries, 1):
        try:
            document, binary_failures = run_binary(binary, results_dir, options, index,
                                                   len(binaries))
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            failures.append(str(error))
            print(f"   FAILED: {error}", flush=True)
            continue
        failures += binary_failures
        document = scrub_document(document, build_dir)
        documents.append(document)
        with open(results_dir / f"{binary.name}.json", "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
    merged = {"context": merged_context(documents), "benchmarks": []}
    for document in documents:
        merged["benchmarks"] += document["benchmarks"]
    compiler = merged["context"].get("compiler")
    merged["context"].update(measured)
    if compiler:
        merged["context"]["compiler"] = compiler  # Google Benchmark's own word wins, as before.
    merged["context"]["aslr"] = "off" if options.aslr_prefix else "on"
    merged["context"].pop("executable", None)  # One per binary; the runs name their binary.
    merged = scrub_document(merged, build_dir)
    failures = [scrub(f, [(str(build_dir), "<build>"), (str(REPO_ROOT), "<repo>")])
                for f in failures]
    return merged, failures


def write_report(out, merged, raw, options, failures):
    """Writes the report of `merged` (the document in the file `raw`) to `out`, with its plots
    and a copy of `raw` beside it."""
    plot_dir = out.parent / out.stem
    plot_dir.mkdir(parents=True, exist_ok=True)
    raw_copy = plot_dir / "raw.json"
    if not raw_copy.exists() or not raw_copy.samefile(raw):
        shutil.copyfile(raw, raw_copy)
    # The plots live beside this file; imported here so that --compare needs no matplotlib.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report_plots  # pylint: disable=import-outside-toplevel
    groups = build_groups([merged])
    plots, plot_note = report_plots.write_plots(groups, plot_dir)
    write_markdown(out, groups, merged["context"], plots, plot_note, options, failures)
    for leak in sorted(set(ABSOLUTE_PATH.findall(out.read_text(encoding="utf-8")))):
        print(f"warning: the report names an absolute path: {leak}", file=sys.stderr)
    return groups, plot_note


def rewrite_report(options):
    """--from-raw: the report of a kept run, measuring nothing. Its rounds are the run's; the
    Machine table's CPU and kernel are this machine's, so rewrite on the machine that ran it."""
    with open(options.from_raw, encoding="utf-8") as f:
        merged = json.load(f)
    out = options.out.resolve() if options.out else REPO_ROOT / "docs" / "benchmarks.md"
    rounds = [run.get("report_round", 1) for run in merged["benchmarks"]]
    options.repetitions = max(rounds, default=1)
    options.quick = False
    groups, _ = write_report(out, merged, options.from_raw, options, [])
    print_summary(groups)
    print(f"\nreport: {display_path(out)} (from {display_path(options.from_raw)})")
    return 0


def main(argv=None):
    options = parse_args(argv)
    if options.compare and len(options.compare) == 2:
        old, new = options.compare
        out = options.out or new.parent / "compare.md"
        write_comparison(old, new, out)
        return 0
    if options.from_raw:
        return rewrite_report(options)
    if options.repetitions is None:
        options.repetitions = 1 if options.quick else DEFAULT_REPETITIONS
    build_dir = options.build_dir.resolve()
    out = report_path(options, build_dir)
    if out is None:
        print("report.py: --quick writes under the build directory only (so it can never "
              f"overwrite the run of record); got --out {options.out}", file=sys.stderr)
        return 2
    started = time.monotonic()
    result = run_suite(options, build_dir)
    if result is None:
        print(f"report.py: no sqloop_bench_* executable under {build_dir / 'bench'}; "
              "build the suite first", file=sys.stderr)
        return 2
    merged, failures = result
    raw = build_dir / "bench" / "results" / "raw.json"
    with open(raw, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=2)
    groups, plot_note = write_report(out, merged, raw, options, failures)
    print_summary(groups)
    print(f"\nreport: {display_path(out)}  raw JSON: {display_path(raw)}  "
          f"({time.monotonic() - started:.1f} s)")
    if plot_note:
        print(f"note: {plot_note}")
    if options.compare:
        write_comparison(options.compare[0], raw, build_dir / "bench" / "results" / "compare.md")
    if failures:
        print(f"\n{len(failures)} failure(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    reexec_with_system_python_for_matplotlib()
    sys.exit(main())
