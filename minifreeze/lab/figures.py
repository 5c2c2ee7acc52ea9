"""Figures of many runs (matplotlib), drawn the same from the CLI's report and the notebooks.

    plot_history(runs, "accuracy.png")   # test accuracy per epoch, one line per run
    plot_rates(groups, "rates.png")      # accuracy against 1 - q, a band per method
    plot_gap(groups, "gap.png")          # the gap to the baseline (dense), log axes
    plot_bytes(groups, "bytes.png")      # accuracy against the bytes stored
    plot_length(length_rows(runs))       # FreezeNet - SNIP against the steps trained

Colours follow the mask (`Method.mask_key`), a dashed line marks a pruned method, the baseline
(`Method.baseline`) is drawn in black: all from the registry, no method named here.
"""

from __future__ import annotations


import numpy as np

from minifreeze.methods import HEADLINE, REGISTRY, group_method
from minifreeze.lab.results import (ReportError, dataset_of, group_runs, is_baseline,
                                    network_of, trained_dense)


def is_gradual(method: str) -> bool:
    """Whether `method` reaches its rate during training (`Method.gradual`)."""
    m = REGISTRY.get(method)
    return m is not None and m.gradual


def plot_history(runs: list[dict], path=None, *, ax=None):
    """Test accuracy per epoch: one colour per (network, method, rate), pruned methods dashed;
    each seed a thin line and, with several seeds, their mean a thick one (not for a group with a
    seed at chance: the mean would sit between the two, where no run is). A run that diverged
    (a `diverged` record, no final accuracy) is drawn over the epochs it finished and named in
    its group's legend entry with where it stopped, even with no epoch to draw. Drawn twice: the
    whole 0-100% range, where a run stuck at chance shows as such (and is named in the legend),
    and zoomed on the range where the runs that trained end, where they differ. Dotted verticals mark
    where a step schedule divides the learning rate. Legend outside the axes. `ax`: draw only the
    zoomed panel there. Saved to `path` if given; returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    groups = group_runs(runs)
    networks = sorted({k[0] for k in groups})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if ax is None:
        fig, (full, zoom) = plt.subplots(1, 2, figsize=(11, 4.2),
                                         gridspec_kw={"width_ratios": [1, 2]})
        panels = (full, zoom)
    else:
        fig, zoom, panels = ax.figure, ax, (ax,)
    finals = [r["history"][-1]["test_accuracy"] for r in runs
              if r["history"] and "diverged" not in r]  # a diverged run did not end there
    trained = [f for f in finals if f >= 0.5]
    handles = []
    for i, ((net, method, rate), rs) in enumerate(sorted(groups.items())):
        colour = colours[i % len(colours)]
        style = "--" if REGISTRY.get(method) is not None and REGISTRY[method].pruned else "-"
        dead = sorted(r.get("seed", 0) for r in rs if r["history"] and "diverged" not in r
                      and r["history"][-1]["test_accuracy"] < 0.2)
        diverged = sorted((r.get("seed", 0), r["diverged"]) for r in rs if "diverged" in r)
        label = f"{method}, q = {rate}" + (f" ({net})" if len(networks) > 1 else "")
        label += f", {len(rs)} seed{'s' if len(rs) > 1 else ''}" if len(rs) > 1 else \
            f", seed {rs[0].get('seed', 0)}"
        if dead:
            label += f"; seed {', '.join(map(str, dead))} at chance"
        for seed, at in diverged:
            label += f"; seed {seed} diverged (epoch {at['epoch']}, step {at['step']})"
        curves = [([h["epoch"] for h in r["history"]],
                   [100 * h["test_accuracy"] for h in r["history"]]) for r in rs]
        for a in panels:
            for x, y in filter(lambda c: c[0], curves):  # a run diverged in epoch 1: none
                a.plot(x, y, color=colour, ls=style, lw=0.8 if len(rs) > 1 else 1.6,
                       alpha=0.45 if len(rs) > 1 else 1.0)
            if len(rs) > 1 and len({len(x) for x, _ in curves}) == 1 and not (dead or diverged):
                a.plot(curves[0][0], np.mean([y for _, y in curves], axis=0), color=colour,
                       ls=style, lw=2.2)
        handles.append(plt.Line2D([], [], color=colour, ls=style, lw=2, label=label))
    stepped = [r for r in runs if (r.get("config") or {}).get("schedule") == "step"]
    drops = sorted({h["epoch"] for r in stepped for h0, h in zip(r["history"], r["history"][1:])
                    if h.get("lr_end") and h0.get("lr_end") and h["lr_end"] < 0.5 * h0["lr_end"]})
    for a in panels:
        for e in drops:
            a.axvline(e, color="grey", ls=":", lw=1)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    if drops:
        handles.append(plt.Line2D([], [], color="grey", ls=":", label="lr divided (step schedule)"))
    if len(panels) == 2:
        panels[0].set_ylim(0, 100)
        panels[0].set_ylabel("test accuracy (%)")
        panels[0].set_title("whole range")
    if trained:
        lo, hi = 100 * min(trained), 100 * max(f for r in runs for f in
                                                (h["test_accuracy"] for h in r["history"]))
        zoom.set_ylim(lo - max(0.5, 0.25 * (hi - lo)), hi + 0.2)
    zoom.set_ylabel("test accuracy (%)")
    if runs:
        zoom.set_title(f"{', '.join(networks)} on {dataset_of(runs)}"
                       + (": where the runs that trained end" if len(panels) == 2 else ""))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _lines(groups, model):
    """{method: rows sorted by rate} for one model, dense apart."""
    out: dict[str, list[dict]] = {}
    for g in groups:
        if g["model"] == model and "mean_accuracy" in g:
            out.setdefault(g["method"], []).append(g)
    return {m: sorted(v, key=lambda g: g["rate"]) for m, v in out.items()}


MARKERS = "osDv^<>pPX*h"


def method_style(method: str) -> dict:
    """Colour by mask (FreezeNet and SNIP alike: `Method.mask_key`, numbered in the registry's
    order after dense), a dashed line for a pruned method; a name outside the registry gets a
    colour from its letters."""
    import matplotlib.pyplot as plt
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(dict.fromkeys(m.mask_key for m in REGISTRY.values() if not m.baseline))
    m = group_method(method)  # a sanity check's group (freezenet_shuffled): its method's style
    # a group outside the registry (elsa_gmp): one of the last four colours, whatever is registered
    i = keys.index(m.mask_key) if m is not None else len(colours) - 1 - sum(map(ord, method)) % 4
    pruned = m is not None and m.pruned
    j = list(REGISTRY).index(method) if method in REGISTRY else sum(map(ord, method))
    return {"color": colours[i % len(colours)], "ls": "--" if pruned else "-",
            "marker": MARKERS[j % len(MARKERS)]}  # a marker per method: none hides another


def _figure(groups, path, draw, data=None):
    """One panel per network, each titled with it (and "on `data`", where given). A network
    trained only dense (so far) has nothing to draw against 1 - q: it gets no panel (its rows
    are in the tables), unless no network has more."""
    import matplotlib.pyplot as plt
    models = sorted({g["model"] for g in groups})
    sparse = [m for m in models
              if any(g["model"] == m and not is_baseline(g["method"]) and "mean_accuracy" in g
                     for g in groups)]
    models = sparse or models
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        draw(ax, model, _lines(groups, model))
        ax.set_title(model if data is None else f"{model} on {data}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_rates(groups: list[dict], path=None, *, data: str | None = None):
    """Test accuracy against the trained share 1 - q (log axis), one line per method with a
    band of +- one std over seeds, dense as a horizontal line; `data` (the data set) joins the
    titles. Returns the figure."""
    def draw(ax, model, lines):
        for method, rows in lines.items():
            mean = [100 * g["mean_accuracy"] for g in rows]
            std = [100 * g["std_accuracy"] for g in rows]
            if is_baseline(method):
                ax.axhline(mean[0], color="black", lw=1, ls="--", label=method)
                ax.axhspan(mean[0] - std[0], mean[0] + std[0], color="black", alpha=0.08)
                continue
            x = [1 - g["rate"] for g in rows]
            style = method_style(method)
            ax.plot(x, mean, label=method, **style)
            ax.fill_between(x, [max(m - s, 0) for m, s in zip(mean, std)],  # accuracy in [0, 100]
                            [min(m + s, 100) for m, s in zip(mean, std)], color=style["color"],
                            alpha=0.15)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("trained share of the weights, 1 - q (log)")
        ax.set_ylabel("test accuracy (%), mean +- std over seeds")
    return _figure(groups, path, draw, data)


def plot_gap(groups: list[dict], path=None, *, reference: float | None = 0.992,
             data: str | None = None):
    """The gap to dense in points (dense's mean - the method's, log axis) against the trained
    share 1 - q (log axis), one line per method with a band of +- one std; `reference` draws
    the gap a method at that fraction of dense would have (FreezeNet's "99.2% of the baseline").
    On a log axis a small gap (q = 0.9) and a collapse (q = 0.999) are both readable, and a
    method above dense shows as a missing point, said in the legend. Only a network with a
    trained dense run has a gap (one whose dense runs all diverged gets no panel); where no
    network has one, ValueError. Returns the figure."""
    trained = trained_dense(groups)
    if not trained:
        raise ValueError("plot_gap: no network has a trained dense run (none, or every one "
                         "diverged), so there is no gap to dense to draw")
    groups = [g for g in groups if g["model"] in trained]

    def draw(ax, model, lines):
        dense = next(v for m, v in lines.items() if is_baseline(m))
        d = 100 * dense[0]["mean_accuracy"]
        floor = 0.01  # points: a gap below it (or a method above dense) is drawn at the floor
        for method, rows in lines.items():
            if is_baseline(method):
                continue
            x = [1 - g["rate"] for g in rows]
            gap = [d - 100 * g["mean_accuracy"] for g in rows]
            std = [100 * g["std_accuracy"] for g in rows]
            style = method_style(method)
            above = sum(v <= 0 for v in gap)
            label = method + (f" ({above} rate{'s' if above > 1 else ''} at or above dense)"
                              if above else "")
            ax.plot(x, [max(v, floor) for v in gap], label=label, **style)
            ax.fill_between(x, [max(v - s, floor) for v, s in zip(gap, std)],
                            [max(v + s, floor) for v, s in zip(gap, std)], color=style["color"],
                            alpha=0.15)
        if reference is not None:
            ax.axhline((1 - reference) * d, color="grey", lw=1, ls=":",
                       label=f"{reference:.1%} of dense")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("trained share of the weights, 1 - q (log)")
        ax.set_ylabel("dense - method, test accuracy points (log)")
    return _figure(groups, path, draw, data)


def plot_bytes(groups: list[dict], path=None, *, data: str | None = None):
    """Test accuracy against the bytes of the stored model (log axis), one line per method."""
    def draw(ax, model, lines):
        for method, rows in lines.items():
            x = [g["file_bytes"] for g in rows]
            mean = [100 * g["mean_accuracy"] for g in rows]
            std = [100 * g["std_accuracy"] for g in rows]
            style = method_style(method) if not is_baseline(method) else {"color": "black", "ls": "none",
                                                                    "marker": "o"}
            ax.errorbar(x, mean, yerr=std, capsize=3, label=method, **style)
        ax.set_xscale("log")
        ax.set_xlabel("bytes on disk (.mfz, log)")
        ax.set_ylabel("test accuracy (%)")
    return _figure(groups, path, draw, data)


def plot_gradual(runs: list[dict], path=None, *, model: str = "lenet5", rate: float | None = None,
                 methods=None):
    """At one rate (default: the sparsest at which a method pruned during training ran; methods
    default: the headline pair and those): left, the rate each method has reached after each epoch (one-shot methods sit at q from the start); right, test accuracy
    per epoch, mean over seeds, a band of one std. Returns the figure."""
    import matplotlib.pyplot as plt
    mine = [r for r in runs if network_of(r) == model and "history" in r
            and "test_accuracy" in r]
    if rate is None:
        rates = [r["rate"] for r in mine if is_gradual(r["method"])]
        if not rates:
            raise ReportError(f"plot_gradual: no run of {model} pruned during training")
        rate = max(rates)
    if methods is None:  # the headline pair and every method pruned during training
        methods = [*HEADLINE, *(m.name for m in REGISTRY.values() if m.gradual)]
    fig, (ax_q, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for method in methods:
        rs = [r for r in mine if r["method"] == method and r["rate"] == rate]
        if not rs:
            continue
        style = method_style(method)
        epochs = [h["epoch"] for h in rs[0]["history"]]
        q = [h.get("rate", rate) for h in rs[0]["history"]]
        ax_q.plot([0] + epochs, [0.0 if "rate" in rs[0]["history"][0] else rate] + q,
                  label=method, **style)
        acc = np.array([[100 * h["test_accuracy"] for h in r["history"]] for r in rs])
        n = len(rs)
        mean, std = acc.mean(axis=0), acc.std(axis=0, ddof=1) if n > 1 else 0 * acc[0]
        ax_a.plot(epochs, mean, label=f"{method} ({n} seed{'' if n == 1 else 's'})", **style)
        ax_a.fill_between(epochs, mean - std, mean + std, color=style["color"], alpha=0.15)
    ax_q.set_xlabel("epoch")
    ax_q.set_ylabel("rate q reached (share of weights pruned or frozen)")
    ax_q.set_title(f"{model}: the schedule to q = {rate!r}")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("test accuracy (%)")
    ax_a.set_title(f"{model}, q = {rate!r}: test accuracy per epoch")
    for ax in (ax_q, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_length(rows: list[dict], path=None, *, marks=None, a: str = HEADLINE[0],
                b: str = HEADLINE[1]):
    """The gap against training length: a - b in points (paired by seed, `length_rows`) against
    the steps trained (log axis), one panel per network, one line per rate with its 95% interval
    as a band, the gap on a symmetric log axis (linear within one point, so a tenth of a point
    and sixty points both read); `marks` {network: {label: steps}} draws dotted verticals on that
    network's panel where other runs (the course's own) sit. Returns the figure."""
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models):
        for i, rate in enumerate(sorted({r["rate"] for r in rows if r["model"] == model})):
            line = [r for r in rows if r["model"] == model and r["rate"] == rate]
            x = [r["steps"] for r in line]
            y = [100 * r["difference"] for r in line]
            n = max(r["seeds"] for r in line)
            ax.plot(x, y, marker=MARKERS[i], color=f"C{i}", label=f"q = {rate} ({n} seeds)")
            band = [(r["steps"], 100 * r["ci_low"], 100 * r["ci_high"]) for r in line
                    if r["ci_low"] is not None]
            if band:
                bx, lo, hi = zip(*band)
                ax.fill_between(bx, lo, hi, color=f"C{i}", alpha=0.15)
        for j, (label, steps) in enumerate((marks or {}).get(model, {}).items()):
            ax.axvline(steps, color="grey", lw=1, ls=":")
            ax.annotate(label, (steps, 1 - 0.07 * (j % 4)), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=0, ha="left", va="top", color="dimgrey")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1)  # linear within +-1 point, log beyond: both readable
        ax.set_xlabel("training steps of 100 images (log)")
        ax.set_title(model)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel(f"{a} - {b}, points\n(mean over seeds, 95% interval; symlog)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
