"""Regenerate docs/RESULTS.md and docs/figures/<row>.png from the run directories of every row.

    python benchmarks/results.py [--runs DIR] [--out DIR] [--seeds N] [--row FILE ...] [k=v ...]

One row per configs/repro_*.py. A row whose runs are all complete (benchmarks/claims.py: final
eval logged, final checkpoint and after-run outputs written, config.json = what the row file
asks for) gets its figures (mean ± sample std over seeds), its plot and its verdict by the rule
its file states; a row with runs under way is listed as "not run yet" with its command and how
many runs are complete, never with a number. A row with no run directory here at all (its sweep
ran on another machine or checkout), and every row not named by --row, keeps its entry and
section from the RESULTS.md being replaced, as generated then (its runs' date and commit say
when). Nothing in RESULTS.md is typed by hand: edit the row files.
--runs: the runs root (default runs/repro); --out: where RESULTS.md and figures/ go (default
docs/); --seeds and k=v as given to reproduce.py (a smoke run's `train.steps=5`, say).
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repo root
from benchmarks import claims  # the row files import it under this name too

ROOT = claims.ROOT


class RowResult:
  def __init__(self, row: claims.Row, runs: list[claims.Run], complete: list[claims.Run],
               measured: claims.Measured | None, verdict: claims.Verdict | None, steps: dict,
               figure: Path | None, commits: list[str], dates: list[str],
               kept: tuple[str, list[str]] | None = None):
    self.row, self.runs, self.complete, self.measured = row, runs, complete, measured
    self.verdict, self.steps, self.figure, self.commits, self.dates = (verdict, steps, figure,
                                                                       commits, dates)
    self.kept = kept                 # (table line, section) from the previous RESULTS.md

  @property
  def done(self) -> bool:
    return self.measured is not None


def collect(row: claims.Row, runs_root: Path, seeds: int | None, extra: tuple[str, ...],
            fig_dir: Path) -> RowResult:
  runs = claims.plan(row, seeds, runs_root, extra)
  steps, complete = {}, []
  for r in runs:
    cfg = r.config()
    steps[r.name] = cfg.train.steps
    if claims.run_done(r, cfg.train.steps) and claims.run_config_matches(r, cfg):
      complete.append(r)
  png = fig_dir / f"{row.name}.png"
  if len(complete) < len(runs):
    png.unlink(missing_ok=True)      # a figure of an earlier sweep would not match the table
    return RowResult(row, runs, complete, None, None, steps, None, [], [])
  m = claims.measure(row, runs, steps)
  verdict = row.verdict(m)
  plot(row, runs, m, png)
  infos = [claims.read_after(r.workdir, "repro") or {} for r in runs]
  commits = sorted({i.get("commit", "unknown") for i in infos})
  dates = sorted(i["finished"][:10] for i in infos if "finished" in i)
  return RowResult(row, runs, complete, m, verdict, steps, png, commits, dates)


# --------------------------------------------------------------------------------------------
# The plot: one panel per Curves / Sweep of the row, mean ± spread over seeds per variant.

def plot(row: claims.Row, runs: list[claims.Run], m: claims.Measured, png: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = row.panels or (claims.Curves(row.title, tuple(v.name for v in row.variants)),)
  cols = min(2, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  for ax, panel in zip(axes.flat, panels):
    if isinstance(panel, claims.Across):
      across(ax, panel, m)
      continue
    for name in panel.variants:
      label = row.variant(name).title
      if isinstance(panel, claims.Curves):
        xs, stats = claims.curves([r for r in runs if r.variant.name == name], panel.key)
        ax.set_xlabel("step")
        ax.set_ylabel(panel.key)
      else:
        pts = [(x, m.stat(name, f)) for x, f in zip(panel.x, panel.figures)]
        pts = [(x, s) for x, s in pts if s.n]
        xs, stats = [x for x, _ in pts], [s for _, s in pts]
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.xlog:
          ax.set_xscale("log", base=2)
      if not xs:
        continue
      mean = [s.mean for s in stats]
      lo = [s.mean - s.spread for s in stats]
      hi = [s.mean + s.spread for s in stats]
      few = isinstance(panel, claims.Sweep) or len(xs) < 30
      (line,) = ax.plot(xs, mean, marker="." if few else None,
                        label=f"{label} (n={stats[0].n})")
      ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
    for label, figs in getattr(panel, "refs", ()):
      pts = [(x, m.stat(panel.variants[0], f)) for x, f in zip(panel.x, figs)]
      pts = [(x, st.mean) for x, st in pts if st.n]
      if pts:
        ax.plot(*zip(*pts), linestyle="--", marker="x", linewidth=1, label=label)
    if getattr(panel, "ylog", False):
      ax.set_yscale("log")
    ax.set_title(panel.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"{row.title}: mean ± std over seeds", fontsize=11)
  fig.tight_layout()
  png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(png, dpi=110)
  plt.close(fig)


def across(ax, panel: claims.Across, m: claims.Measured) -> None:
  for label, pts in panel.lines:
    st = [(x, m.stat(v, panel.figure)) for x, v in pts]
    st = [(x, s) for x, s in st if s.n]
    if not st:
      continue
    xs, mean = [x for x, _ in st], [s.mean for _, s in st]
    (line,) = ax.plot(xs, mean, marker=".", label=f"{label} (n={st[0][1].n})")
    ax.fill_between(xs, [s.mean - s.spread for _, s in st], [s.mean + s.spread for _, s in st],
                    color=line.get_color(), alpha=0.25, linewidth=0)
  if panel.xlog:
    ax.set_xscale("log", base=2)
  ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel)
  ax.set_title(panel.title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


# --------------------------------------------------------------------------------------------
# RESULTS.md

def cmd(row: claims.Row, seeds: int | None, extra: tuple[str, ...]) -> str:
  return row.command + (f" --seeds {seeds}" if seeds else "") + "".join(f" {o}" for o in extra)


def headline(res: RowResult) -> str:
  if not res.done:
    return f"not run yet ({len(res.complete)}/{len(res.runs)} runs complete)"
  return "; ".join(f"{c.label} {res.measured.rel(c.variant, c.ref, c.figure).fmt(pct=True)}"
                   for c in res.row.headline) or "see below"


def section(res: RowResult, out: Path, seeds, extra) -> list[str]:
  row = res.row
  configs = sorted({v.config for v in row.variants})
  lines = [f"## {row.title}", "",
           f"> {row.claim}", "",
           f"{row.citation}", "",
           (f"- **Command** (the whole sweep, resumable): `{cmd(row, seeds, extra)}`; "
           f"the row: [`{row.source}`](../{row.source})"),
           f"- **Configs**: {', '.join(f'`{c}`' for c in configs)}"
           + (f"; every run adds `{' '.join(row.overrides)}`" if row.overrides else ""),
           f"- **Budget**: {row.budget}",
           f"- **Accelerator version**: {row.accelerator}",
           f"- **Verdict rule** (stated before the runs): {row.rule}", ""]
  shown = {k: f for k, f in row.figures.items() if f.table}
  lines += ["| variant | config + overrides | " + " | ".join(
      f.label or k for k, f in shown.items()) + " |",
            "|---|---|" + "---|" * len(shown)]
  for v in row.variants:
    cells = []
    for k in shown:
      cells.append(res.measured.stat(v.name, k).fmt(pct=shown[k].pct) if res.done else "—")
    over = " ".join(v.overrides)
    lines.append(f"| {v.title} | `{Path(v.config).name}`{f' `{over}`' if over else ''} | "
                 + " | ".join(cells) + " |")
  lines.append("")
  if not res.done:
    lines += [(f"**Not run yet**: {len(res.complete)} of {len(res.runs)} runs complete. "
              f"Run `{cmd(row, seeds, extra)}`, then `python benchmarks/results.py`."), ""]
    return lines
  lines += ["| comparison (per seed, then mean ± std) | measured |", "|---|---|"]
  lines += [f"| {c.label} | {res.measured.rel(c.variant, c.ref, c.figure).fmt(pct=True)} |"
            for c in row.headline]
  rel = os.path.relpath(res.figure, out)
  lines += ["", f"![{row.title}]({rel})", "",
            f"**Verdict: {res.verdict.result}.** {res.verdict.reason}" + few_seeds(res, seeds), "",
            runs_when(res), ""]
  return lines


def few_seeds(res: RowResult, seeds: int | None) -> str:
  if seeds is not None and seeds < res.row.seeds:
    return f" (from {seeds} seed(s), fewer than the row's {res.row.seeds}: not the row's verdict)"
  return ""


def runs_when(res: RowResult) -> str:
  """When and at which commit the runs finished (reproduce.py's <workdir>/repro.json)."""
  if not res.dates:
    return "The runs' date and commit are unknown (no repro.json: not run by reproduce.py)."
  span = res.dates[0] + (f" to {res.dates[-1]}" if res.dates[-1] != res.dates[0] else "")
  return f"Runs finished {span} at commit {', '.join(res.commits)}."


def render(results: list[RowResult], out: Path, runs_root: Path, seeds, extra) -> str:
  now = datetime.date.today().isoformat()
  try:
    shown_runs = runs_root.relative_to(ROOT)
  except ValueError:
    shown_runs = runs_root
  lines = ["# Reproduced claims", "",
           (f"Generated by `python benchmarks/results.py` from `{shown_runs}` on {now} at commit "
           f"{claims.git_commit()}: do not edit by hand (a row is defined by its `configs/repro_<row>.py`, "
           "the format in `benchmarks/claims.py`). Each row's command runs its whole sweep and can "
           "be rerun to continue it; figures are mean ± sample std over seeds, relative figures "
           "computed per seed (same seed, same data order) and then averaged. A row whose runs "
           "are under way is \"not run yet\"; a row whose runs are not on the machine that "
           "regenerated this file keeps its entry as generated where they ran (each row says "
           "when and at which commit its runs finished)."), "",
           "| claim | paper | command | measured | verdict |", "|---|---|---|---|---|"]
  for res in results:
    if res.kept:
      lines.append(res.kept[0])
      continue
    v = (f"**{res.verdict.result}**: {res.verdict.reason}{few_seeds(res, seeds)}" if res.done
         else "not run yet")
    lines.append(f"| [{res.row.title}](#{anchor(res.row.title)}) | {res.row.citation} | "
                 f"`{cmd(res.row, seeds, extra)}` | {headline(res)} | {v} |")
  lines.append("")
  for res in results:
    lines += res.kept[1] if res.kept else section(res, out, seeds, extra)
  return "\n".join(lines).rstrip() + "\n"


def previous(md: Path) -> dict[str, tuple[str, list[str]]]:
  """The generated rows of an existing RESULTS.md: {title: (its table line, its section)}."""
  if not md.exists():
    return {}
  lines = md.read_text().splitlines()
  table = {m.group(1): ln for ln in lines if (m := re.match(r"\| \[(.+?)\]\(#", ln))}
  starts = [i for i, ln in enumerate(lines) if ln.startswith("## ")] + [len(lines)]
  out = {}
  for a, b in zip(starts, starts[1:]):
    title = lines[a][3:].strip()
    if title in table and any(ln.startswith("**Verdict:") for ln in lines[a:b]):
      out[title] = (table[title], lines[a:b])
  return out


def anchor(title: str) -> str:
  keep = "".join(c for c in title.lower() if c.isalnum() or c in " -")
  return keep.replace(" ", "-")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runs", type=Path, default=claims.DEFAULT_RUNS, help="runs root (default runs/repro)")
  p.add_argument("--out", type=Path, default=ROOT / "docs", help="RESULTS.md and figures/ (default docs/)")
  p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: each row's)")
  p.add_argument("--row", dest="rows", action="append", default=None,
                 help="a row file (repeatable; default every configs/repro_*.py)")
  p.add_argument("overrides", nargs="*", help="key.path=value, as given to reproduce.py")
  args = p.parse_intermixed_args(argv)     # flags may come after key=value overrides
  out, runs_root, extra = args.out.absolute(), args.runs.absolute(), tuple(args.overrides)
  named = [Path(f).resolve() for f in args.rows or ()]
  files = claims.row_files() + [f for f in named if f not in claims.row_files()]
  old = previous(out / "RESULTS.md")
  results = []
  for f in files:
    row = claims.load_row(f)
    asked = not named or f.resolve() in named
    if (not asked or not (runs_root / row.name).exists()) and row.title in old:
      results.append(RowResult(row, [], [], None, None, {}, None, [], [], kept=old[row.title]))
    else:   # asked, or never generated: from its runs here ("not run yet" without them)
      results.append(collect(row, runs_root, args.seeds, extra, out / "figures"))
  out.mkdir(parents=True, exist_ok=True)
  (out / "RESULTS.md").write_text(render(results, out, runs_root, args.seeds, extra))
  for res in results:
    if res.kept:
      print(f"{res.row.name}: kept from the previous RESULTS.md")
      continue
    print(f"{res.row.name}: " + (f"{res.verdict.result} ({res.figure})" if res.done else
                                 f"not run yet ({len(res.complete)}/{len(res.runs)} runs complete)"))
  print(f"wrote {out / 'RESULTS.md'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
