"""The plots of sqloop's benchmark report (used by bench/report.py).

Per group, from the groups bench/report.py builds:
    * a bar chart of the group's value (time per op, or its "metric:<group>" counter, e.g.
      bytes per connection), one bar per variant, with the spread of the rounds (min-max) as
      an error bar, the baseline drawn in its own colour with a dashed line at its value, and
      each bar's ratio to the baseline beside it. The axis is logarithmic when the bars span
      more than 20x (report.use_log_scale), so small values stay visible;
    * the "plot:<group>" chart: that counter against the numeric args of each variant;
    * a latency CDF when the runs carry "latency_cdf" (one panel per series, e.g. read and
      write): latency on a log x axis against the fraction of operations at or below it, on a
      logit y axis so that p50, p90, p99 and p99.9 are equally far apart;
    * for a load group ("load:<group>", see bench/report.py) only the load chart: p50 and p99
      against the achieved throughput, one colour per system, both axes logarithmic.

matplotlib is optional: without it write_plots returns no plots and a note saying so.
"""

import math

import report

BASELINE_COLOR = "#4c72b0"
VARIANT_COLOR = "#dd8452"
DPI = 110
# Quantiles drawn on the CDF's logit axis; the max (quantile 1) cannot be drawn there.
CDF_TICKS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)


def write_plots(groups, plot_dir):
    """Writes every plot; returns ({group: [(title, png path)]}, note or None)."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return {}, ("matplotlib is not installed (Debian: apt-get install python3-matplotlib), "
                    "so this report has no plots.")
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for group, entry in groups.items():
        rows = [r for r in entry["rows"] if r["value"] is not None]
        if not rows:
            continue
        if entry.get("load"):
            found = [load_chart(plt, group, entry, plot_dir)]
        else:
            found = [bar_chart(plt, group, entry, rows, plot_dir),
                     counter_chart(plt, group, entry, rows, plot_dir),
                     cdf_chart(plt, group, entry, rows, plot_dir)]
        plots[group] = [item for item in found if item is not None]
    return plots, None


def save(plt, figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def scaled(entry, rows):
    """(scale divisor, axis label) for the group's value."""
    metric = entry["metric"]
    if metric is None:
        unit = report.pick_unit(min(r["value"] for r in rows))
        return report.NS_PER_UNIT[unit], f"time per op ({report.UNIT_LABEL[unit]}, lower is better)"
    if "bytes" in metric:
        return 1.0, f"{metric} (bytes, lower is better)"
    return 1.0, metric


def bar_chart(plt, group, entry, rows, plot_dir):
    if len(rows) == 1 and entry["metric"] and "bytes" in entry["metric"]:
        return bytes_chart(plt, group, rows[0], plot_dir)
    divisor, axis_label = scaled(entry, rows)
    baseline = entry["baseline"]
    labels = [report.row_label(r) + (" (baseline)" if r["variant"] == baseline else "")
              for r in rows]
    values = [r["value"] / divisor for r in rows]
    low = [(r["value"] - min(r["samples"])) / divisor if r["samples"] else 0 for r in rows]
    high = [(max(r["samples"]) - r["value"]) / divisor if r["samples"] else 0 for r in rows]
    figure, axes = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.4))
    colors = [BASELINE_COLOR if r["variant"] == baseline else VARIANT_COLOR for r in rows]
    bars = axes.barh(labels, values, color=colors, xerr=[low, high],
                     error_kw={"ecolor": "#333333", "capsize": 3, "elinewidth": 1})
    axes.invert_yaxis()
    log = report.use_log_scale(values)
    if log:
        axes.set_xscale("log")
    baseline_values = {v for r, v in zip(rows, values) if r["variant"] == baseline}
    if len(baseline_values) == 1:
        axes.axvline(baseline_values.pop(), color=BASELINE_COLOR, linestyle="--", linewidth=1)
    top = max(v + h for v, h in zip(values, high))
    for bar, row, err in zip(bars, rows, high):
        if row["ratio"] is not None and row["variant"] != baseline:
            axes.text(bar.get_width() + err, bar.get_y() + bar.get_height() / 2,
                      f" {report.ratio_text(row['ratio'])}", va="center", fontsize=8)
    if log:
        axes.set_xlim(min(values) / 2, top * 2.5)
    else:
        axes.set_xlim(0, top * 1.2)
    axes.set_xlabel(axis_label + (", log scale" if log else ""))
    spread = "bars: median round, whiskers: min–max of rounds"
    axes.set_title(f"{group}" + (f" (baseline {baseline})" if baseline else "")
                   + f"\n{spread}", fontsize=10)
    axes.grid(axis="x", alpha=0.3, which="both" if log else "major")
    return ("value per variant", save(plt, figure, plot_dir / f"{report.slug(group)}.png"))


def bytes_chart(plt, group, row, plot_dir):
    """A memory group with one variant: one bar per bytes counter of its run."""
    counters = [c for c in report.counter_names([row["run"]]) if "bytes" in c]
    values = [row["run"][c] for c in counters]
    figure, axes = plt.subplots(figsize=(8, 0.42 * len(counters) + 1.4))
    bars = axes.barh(counters, values, color=VARIANT_COLOR)
    axes.invert_yaxis()
    for bar, value in zip(bars, values):
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                  f" {report.format_bytes(value)}", va="center", fontsize=8)
    axes.set_xlim(min(values + [0]) * 1.25, max(values + [1]) * 1.25)
    axes.set_xlabel("bytes (lower is better)")
    axes.set_title(f"{group}: {report.row_label(row)} (one round)", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return ("bytes", save(plt, figure, plot_dir / f"{report.slug(group)}.png"))


def counter_chart(plt, group, entry, rows, plot_dir):
    """The "plot:<group>" chart: the counter against numeric args, one line per variant."""
    from matplotlib import ticker  # pylint: disable=import-outside-toplevel
    counter = entry.get("plot_counter")
    if not counter:
        return None
    lines, baselines = {}, {}
    for row in rows:
        value = row["run"].get(counter)
        if value is None:
            continue
        if not row["args"]:
            baselines[row["variant"]] = value
        elif row["args"].isdigit():
            lines.setdefault(row["variant"], []).append((int(row["args"]), value))
    if not lines:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    for variant, points in lines.items():
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    for variant, value in baselines.items():
        is_baseline = variant == entry["baseline"]
        axes.axhline(value, color=BASELINE_COLOR if is_baseline else "#999999",
                     linestyle="--" if is_baseline else ":",
                     label=variant + (" (baseline)" if is_baseline else ""))
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_yscale("log")
    axes.set_xlabel("the variant's argument (concurrent writers, clients or threads)")
    axes.set_ylabel(counter)
    axes.set_title(f"{group}: {counter}")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, which="both")
    path = plot_dir / f"{report.slug(group)}_{report.slug(counter)}.png"
    return (counter, save(plt, figure, path))


def cdf_chart(plt, group, entry, rows, plot_dir):
    """The latency CDF of every variant, one panel per series (e.g. read, write)."""
    from matplotlib import ticker  # pylint: disable=import-outside-toplevel
    series_names = []
    for row in rows:
        for name in row["run"].get("latency_cdf", {}):
            if name not in series_names:
                series_names.append(name)
    if not series_names:
        return None
    figure, panels = plt.subplots(1, len(series_names),
                                  figsize=(5.5 * len(series_names) + 2, 4.2), squeeze=False)
    for axes, name in zip(panels[0], series_names):
        lowest, highest = math.inf, 0.0
        for row in rows:
            points = [(us, q) for q, us in row["run"].get("latency_cdf", {}).get(name, [])
                      if 0 < q < 1 and us > 0]
            if not points:
                continue
            points.sort()
            lowest, highest = min(lowest, points[0][0]), max(highest, points[-1][0])
            is_baseline = row["variant"] == entry["baseline"]
            axes.plot([p[0] for p in points], [p[1] for p in points],
                      label=report.row_label(row) + (" (baseline)" if is_baseline else ""),
                      linestyle="--" if is_baseline else "-",
                      linewidth=2 if is_baseline else 1.3)
        axes.set_xscale("log")
        # Ticks at 1, 2 and 5 of each decade when the panel spans a few decades (one spanning
        # less than a decade would otherwise have no labelled tick at all), at each decade
        # when it spans more, so that the labels never run into each other.
        wide = highest > 0 and highest / lowest > 1000
        subs = (1.0,) if wide else (1.0, 2.0, 5.0)
        axes.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: time_label(value)))
        axes.set_yscale("logit")
        axes.set_yticks(CDF_TICKS)
        axes.set_yticklabels([f"p{q * 100:g}" for q in CDF_TICKS])
        axes.minorticks_off()
        axes.set_xlabel(f"{name} latency (log scale)")
        axes.set_ylabel("fraction of operations at or below")
        axes.set_title(f"{group}: {name} latency CDF", fontsize=10)
        axes.grid(alpha=0.3, which="both")
    # One legend, outside the last panel, so that it never hides a curve.
    panels[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return ("latency CDF", save(plt, figure, plot_dir / f"{report.slug(group)}_cdf.png"))


def load_chart(plt, group, entry, plot_dir):
    """p50 (dashed, circles) and p99 (solid, squares) against achieved throughput per system.

    Both axes are logarithmic: the offered rates double from step to step, and latencies run
    from a read's microseconds to seconds of queueing past saturation. A curve that turns back
    to the left (achieved falls while latency climbs) is a system past its saturation point.
    """
    from matplotlib import ticker  # pylint: disable=import-outside-toplevel
    from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
    curves = report.load_curves(entry)
    if not curves:
        return None
    figure, axes = plt.subplots(figsize=(8.5, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for index, (variant, steps) in enumerate(curves.items()):
        is_baseline = variant == entry["baseline"]
        color = colors[index % len(colors)]
        achieved = [step["achieved"] for step in steps]
        axes.plot(achieved, [step["p99"] for step in steps], color=color, marker="s",
                  markersize=4, linewidth=2.2 if is_baseline else 1.6)
        axes.plot(achieved, [step["p50"] for step in steps], color=color, marker="o",
                  markersize=3, linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color=color, linewidth=2,
                              label=variant + (" (baseline)" if is_baseline else "")))
    handles += [Line2D([], [], color="#555555", marker="s", linewidth=1.6, label="p99"),
                Line2D([], [], color="#555555", marker="o", linestyle="--", linewidth=1,
                       label="p50")]
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: time_label(value)))
    axes.set_xlabel("achieved throughput (requests/s, log scale)")
    axes.set_ylabel("latency from intended start (log scale)")
    axes.set_title(f"{group}: latency against load (open loop; one point per offered rate)",
                   fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ("latency against load", save(plt, figure, plot_dir / f"{report.slug(group)}.png"))


def time_label(value_us):
    """A latency axis tick: 100 µs, 10 ms, 1 s (a decade axis in µs reads badly as 1e+06)."""
    for unit, size in (("s", 1e6), ("ms", 1e3)):
        if value_us >= size:
            return f"{value_us / size:g} {unit}"
    return f"{value_us:g} µs"
