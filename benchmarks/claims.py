"""A reproduced claim (one row of docs/RESULTS.md): its types, its runs, and reading their results.

A row is a file configs/repro_<row>.py that opens with the command running its sweep and defines
`ROW = Row(...)`: the claim, the runs (variants = a config file + overrides, x seeds), the figures
each run contributes, the verdict rule (stated before the runs), the plot and the accelerator
version. Two entry scripts use this module and nothing else of each other:

    python benchmarks/reproduce.py configs/repro_<row>.py [--seeds N] [--dry-run] [k=v ...]   # runs
    python benchmarks/results.py [--runs DIR] [--out DIR]                                     # table

A run's workdir is <runs>/<row>/<variant>-s<seed> (default runs root: runs/repro). A run is
complete when its metrics.jsonl has the eval row of its final step, its final checkpoint exists
and every after-run output (e.g. eval.py's amplification JSON) is written; results.py counts only
complete runs whose config.json is the configuration the row file asks for (model, data, train).
Spread = the sample standard deviation over seeds; a relative figure (variant vs a reference) is
computed per seed (same seed, same data order) and then averaged.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

DEFAULT_RUNS = ROOT / "runs" / "repro"
VERDICTS = ("reproduced", "direction holds", "not reproduced")


# --------------------------------------------------------------------------------------------
# The format of a row.

@dataclass(frozen=True)
class AfterRun:
  """A command run once a training run is complete, its stdout (JSON) kept as <workdir>/<name>.json.
  argv is the script and its flags; `--workdir <workdir>` is appended."""
  name: str
  argv: tuple[str, ...]
  est_s: float = 60.0                # the budget estimate of one call


@dataclass(frozen=True)
class Variant:
  """One configuration of a row: a config file + overrides; run once per seed."""
  name: str                          # the workdir's prefix: <variant>-s<seed>
  config: str                        # configs/<file>.py, relative to the repo root
  overrides: tuple[str, ...] = ()
  label: str = ""                    # legend and table label (default: name)
  after: tuple[AfterRun, ...] = ()
  steps_per_sec: float = 1.0         # measured (see the row file): the budget estimate
  startup_s: float = 0.0             # start-up, compile, final eval; 0 = the row's

  @property
  def title(self) -> str:
    return self.label or self.name


@dataclass(frozen=True)
class Figure:
  """What a run contributes: `key` of metrics.jsonl at `step` (None: the final step), or, with
  `after`, the number at `path` in that after-run's JSON."""
  key: str = "eval_loss"
  step: int | None = None
  after: str = ""
  path: tuple[str, ...] = ()
  label: str = ""
  pct: bool = False                  # shown as a percentage (a relative change)
  table: bool = True                 # a column of the row's table (False: for a plot only)


@dataclass(frozen=True)
class Compare:
  """A headline number: figure of `variant` relative to `ref` (per seed, then mean ± spread)."""
  label: str
  variant: str
  ref: str
  figure: str = "eval_loss"


@dataclass(frozen=True)
class Curves:
  """A plot panel: metrics.jsonl's `key` against step, mean ± spread over seeds per variant."""
  title: str
  variants: tuple[str, ...]
  key: str = "eval_loss"


@dataclass(frozen=True)
class Sweep:
  """A plot panel: one figure per x (e.g. the amplification sweep), mean ± spread per variant."""
  title: str
  variants: tuple[str, ...]
  x: tuple[float, ...]
  figures: tuple[str, ...]
  xlabel: str = ""
  ylabel: str = ""
  xlog: bool = False
  ylog: bool = False
  # reference lines beside the variants: (label, one figure per x), read from the first
  # variant's runs (e.g. baselines an after-run computed on the same draws), drawn dashed
  refs: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Across:
  """A plot panel: one line per label joining `figure` of several variants along x (a model at
  each width, one variant per width), mean ± spread over seeds per point."""
  title: str
  lines: tuple[tuple[str, tuple[tuple[float, str], ...]], ...]   # (label, ((x, variant), ...))
  figure: str = "eval_loss"
  xlabel: str = ""
  ylabel: str = ""
  xlog: bool = False

  @property
  def variants(self) -> tuple[str, ...]:
    return tuple(v for _, pts in self.lines for _, v in pts)


@dataclass(frozen=True)
class Verdict:
  result: str                        # one of VERDICTS
  reason: str

  def __post_init__(self):
    if self.result not in VERDICTS:
      raise ValueError(f"verdict {self.result!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Row:
  name: str                          # runs/repro/<name>, docs/figures/<name>.png
  title: str
  claim: str                         # the paper's claim, in our words
  citation: str
  variants: tuple[Variant, ...]
  figures: dict[str, Figure]
  verdict: Callable[[Measured], Verdict]   # the rule, stated before the runs; its docstring
  #                                    says it in words (RESULTS.md's "verdict rule")
  seeds: int = 2
  overrides: tuple[str, ...] = ()    # applied to every variant, before its own
  headline: tuple[Compare, ...] = ()
  panels: tuple[Curves | Sweep | Across, ...] = ()
  accelerator: str = ""              # the same sweep's bigger config, on an accelerator
  budget: str = ""                   # the estimate in words (measured speeds)
  startup_s: float = 40.0            # per train.py process: start-up, compile, final eval
  source: str = ""                   # the row file (set by load_row)

  @property
  def rule(self) -> str:
    return " ".join((self.verdict.__doc__ or "(the verdict function states no rule)").split())

  @property
  def command(self) -> str:
    return f"python benchmarks/reproduce.py {self.source}"

  def variant(self, name: str) -> Variant:
    for v in self.variants:
      if v.name == name:
        return v
    raise KeyError(f"row {self.name}: no variant {name!r} (has {[v.name for v in self.variants]})")

  def check(self) -> None:
    """The row's internal references (panels, headline, figures' after-runs) name what exists."""
    names = [v.name for v in self.variants]
    if len(set(names)) != len(names):
      raise ValueError(f"row {self.name}: duplicate variant names {names}")
    if self.seeds < 1:
      raise ValueError(f"row {self.name}: seeds must be at least 1")
    for c in self.headline:
      self.variant(c.variant), self.variant(c.ref)
      if c.figure not in self.figures:
        raise ValueError(f"row {self.name}: headline {c.label!r} names no figure {c.figure!r}")
    for p in self.panels:
      for v in p.variants:
        self.variant(v)
      if isinstance(p, Sweep) and (len(p.x) != len(p.figures)
                                   or any(f not in self.figures for f in p.figures)):
        raise ValueError(f"row {self.name}: panel {p.title!r}: x and figures do not match")
      if isinstance(p, Across) and p.figure not in self.figures:
        raise ValueError(f"row {self.name}: panel {p.title!r} names no figure {p.figure!r}")
    afters = {a.name for v in self.variants for a in v.after}
    for k, f in self.figures.items():
      if f.after and f.after not in afters:
        raise ValueError(f"row {self.name}: figure {k!r} reads after-run {f.after!r}, which no "
                         "variant has")


def git_commit() -> str:
  """HEAD's short hash, +dirty when tracked files changed."""
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False,
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return out + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def load_row(path: str | Path) -> Row:
  """Runs configs/repro_<row>.py (trusted Python, like every config) and returns its ROW."""
  p = Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"{path}: no such row file")
  spec = importlib.util.spec_from_file_location(f"_seqzoo_repro_{p.stem}", p)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  row = getattr(mod, "ROW", None)
  if not isinstance(row, Row):
    raise TypeError(f"{path} defines no ROW = benchmarks.claims.Row(...)")
  try:
    source = str(p.resolve().relative_to(ROOT))
  except ValueError:
    source = str(p)
  row = dataclasses.replace(row, source=source)
  row.check()
  return row


def row_files() -> list[Path]:
  return sorted((ROOT / "configs").glob("repro_*.py"))


# --------------------------------------------------------------------------------------------
# The plan: every (variant, seed) as one train.py command.

@dataclass(frozen=True)
class Run:
  row: str
  variant: Variant
  seed: int
  workdir: Path
  overrides: tuple[str, ...]         # row's + variant's + train.seed + the command line's

  @property
  def name(self) -> str:
    return f"{self.variant.name}-s{self.seed}"

  def train_argv(self, python: str = sys.executable) -> list[str]:
    return [python, "train.py", "--config", self.variant.config, "--workdir", str(self.workdir),
            *self.overrides]

  def after_argv(self, a: AfterRun, python: str = sys.executable) -> list[str]:
    return [python, *a.argv, "--workdir", str(self.workdir)]

  def config(self):
    """The resolved config, validated as train.py would on this CPU (configs.base: a ConfigError
    names the bad key or value) before anything runs."""
    from configs import base
    cfg = base.load(str(ROOT / self.variant.config), list(self.overrides))
    base.validate(cfg, max(cfg.mesh.cpu_devices, 1))
    return cfg


def plan(row: Row, seeds: int | None = None, runs: Path | None = None,
         extra: tuple[str, ...] = ()) -> list[Run]:
  """Variants x seeds 0..seeds-1 (default: the row's), in the row's order, seed-major within a
  variant; each into <runs>/<row>/<variant>-s<seed>."""
  root = Path(runs or DEFAULT_RUNS) / row.name
  return [Run(row.name, v, s, root / f"{v.name}-s{s}",
              (*row.overrides, *v.overrides, f"train.seed={s}", *extra))
          for v in row.variants for s in range(seeds or row.seeds)]


# --------------------------------------------------------------------------------------------
# Reading a run directory.

def read_metrics(workdir: Path) -> list[dict]:
  """metrics.jsonl's rows; a resumed run logs some steps twice: the later row wins. A torn last
  line (killed mid-write) is ignored."""
  f = Path(workdir) / "metrics.jsonl"
  if not f.is_file():
    return []
  rows: dict[tuple[int, bool], dict] = {}
  for line in f.read_text().splitlines():
    try:
      r = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(r, dict) and "step" in r:
      rows[(int(r["step"]), "eval_loss" in r)] = r
  return [rows[k] for k in sorted(rows)]


def series(workdir: Path, key: str) -> tuple[list[int], list[float]]:
  pts = [(r["step"], r[key]) for r in read_metrics(workdir) if key in r]
  return [p[0] for p in pts], [p[1] for p in pts]


def checkpoint_steps(workdir: Path) -> list[int]:
  d = Path(workdir) / "checkpoints"
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def trained_to(workdir: Path) -> int:
  """The last step with a checkpoint (where a rerun resumes), 0 if none."""
  return max(checkpoint_steps(workdir), default=0)


def train_done(workdir: Path, steps: int) -> bool:
  """Its final step reached: the final eval row logged and the final checkpoint written."""
  final_eval = any(r["step"] == steps and "eval_loss" in r for r in read_metrics(workdir))
  return final_eval and steps in checkpoint_steps(workdir)


def after_path(workdir: Path, a: AfterRun | str) -> Path:
  return Path(workdir) / f"{a if isinstance(a, str) else a.name}.json"


def read_after(workdir: Path, name: str) -> dict | None:
  f = after_path(workdir, name)
  try:
    return json.loads(f.read_text())
  except (OSError, json.JSONDecodeError):
    return None


def run_done(run: Run, steps: int) -> bool:
  return train_done(run.workdir, steps) and all(
      (read_after(run.workdir, a.name) or {}).get("step") == steps for a in run.variant.after)


def run_config_matches(run: Run, cfg) -> bool:
  """The workdir's config.json is `cfg` in model, data and train (what the row file asks for),
  read as train.py reads it: a field added to the code after the run was saved takes its
  default (the run ran with what that default does), as a resumed run does."""
  from configs import base
  f = run.workdir / "config.json"
  try:
    have = base.from_dict(json.loads(f.read_text()))
  except (OSError, ValueError, TypeError, base.ConfigError):
    return False
  return all(getattr(have, s) == getattr(cfg, s) for s in ("model", "data", "train"))


def figure_value(workdir: Path, fig: Figure, final_step: int) -> float | None:
  if fig.after:
    x = read_after(workdir, fig.after)
    for k in fig.path:
      x = x.get(k) if isinstance(x, dict) else None
    return float(x) if isinstance(x, (int, float)) else None
  step = final_step if fig.step is None else fig.step
  for r in read_metrics(workdir):
    if r["step"] == step and fig.key in r:
      return float(r[fig.key])
  return None


# --------------------------------------------------------------------------------------------
# Measured figures, over seeds.

@dataclass(frozen=True)
class Stat:
  values: tuple[float, ...]

  @property
  def n(self) -> int:
    return len(self.values)

  @property
  def mean(self) -> float:
    return statistics.fmean(self.values) if self.values else math.nan

  @property
  def spread(self) -> float:
    """Sample standard deviation over seeds (0 with one seed)."""
    return statistics.stdev(self.values) if self.n > 1 else 0.0

  def fmt(self, pct: bool = False, digits: int = 3) -> str:
    if not self.values:
      return "—"
    if pct:
      return f"{self.mean:+.{max(digits - 2, 1)}%} ± {self.spread:.{max(digits - 2, 1)}%} (n={self.n})"
    return f"{self.mean:.{digits}f} ± {self.spread:.{digits}f} (n={self.n})"


@dataclass
class Measured:
  """figure values per variant and seed: values[variant][figure][seed]. The verdict's input."""
  row: Row
  values: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)

  def stat(self, variant: str, figure: str = "eval_loss") -> Stat:
    per_seed = self.values.get(variant, {}).get(figure, {})
    return Stat(tuple(per_seed[s] for s in sorted(per_seed)))

  def mean(self, variant: str, figure: str = "eval_loss") -> float:
    return self.stat(variant, figure).mean

  def rel(self, variant: str, ref: str, figure: str = "eval_loss") -> Stat:
    """variant / ref - 1, per seed both have (same seed: same data order), over those seeds."""
    a = self.values.get(variant, {}).get(figure, {})
    b = self.values.get(ref, {}).get(figure, {})
    return Stat(tuple(a[s] / b[s] - 1.0 for s in sorted(set(a) & set(b))))


def measure(row: Row, runs: list[Run], steps: dict[str, int]) -> Measured:
  """Each run's figures (those it has: an after-run figure only from variants with that step)."""
  m = Measured(row)
  for r in runs:
    names = {a.name for a in r.variant.after}
    for k, fig in row.figures.items():
      if fig.after and fig.after not in names:
        continue
      v = figure_value(r.workdir, fig, steps[r.name])
      if v is not None:
        m.values.setdefault(r.variant.name, {}).setdefault(k, {})[r.seed] = v
  return m


def curves(runs: list[Run], key: str) -> tuple[list[int], list[Stat]]:
  """One variant's runs: the steps all of them logged `key` at, and a Stat per step."""
  per = [dict(zip(*series(r.workdir, key))) for r in runs]
  common = sorted(set.intersection(*(set(p) for p in per))) if per else []
  return common, [Stat(tuple(p[s] for p in per)) for s in common]
