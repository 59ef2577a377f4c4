"""The reproduction machinery (benchmarks/claims.py, reproduce.py, results.py), without training:
the plan of a row, skipping complete runs and resuming others (train.py replaced by a fake), the
results table, verdict and plot from synthetic run directories, and every configs/repro_*.py."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import claims, reproduce, results
from configs import base

ROOT = claims.ROOT
STEPS = 4

ROW_FILE = textwrap.dedent('''\
    """python benchmarks/reproduce.py {path}"""
    from benchmarks.claims import Across, AfterRun, Compare, Curves, Figure, Row, Sweep, Variant, Verdict

    def verdict(m):
      """b above a: reproduced;
      otherwise not."""
      gap = m.rel("b", "a")
      return Verdict("reproduced" if gap.mean > 0 else "not reproduced", f"b vs a {{gap.mean:+.1%}}")

    AMP = AfterRun("amp", ("eval.py", "--logit-scale", "1", "2"), est_s=1.0)
    ROW = Row(
        name="toy", title="Toy claim", claim="b is worse than a.", citation="Nobody (2026)",
        variants=(Variant("a", "configs/quickstart.py", ("model.n_layers=1",), after=(AMP,)),
                  Variant("b", "configs/quickstart.py", ("model.n_layers=2",))),
        seeds=2,
        overrides=("train.steps={steps}", "train.warmup_steps=1", "train.eval_every=2"),
        figures={{"eval_loss": Figure("eval_loss"), "early": Figure("eval_loss", step=2),
                  "amp2": Figure(after="amp", path=("logit_scale", "2.0", "rel_loss_increase")),
                  "plot_only": Figure("loss", step=2, table=False)}},
        headline=(Compare("b vs a", "b", "a"),),
        verdict=verdict,
        panels=(Curves("eval", ("a", "b")), Curves("train", ("a", "b"), "loss"),
                Sweep("amp", ("a",), (2.0,), ("amp2",), refs=(("a loss @2", ("plot_only",)),)),
                Across("a then b", (("depth", ((1.0, "a"), (2.0, "b"))),), "eval_loss")),
        accelerator="none", budget="seconds",
    )
''')


@pytest.fixture
def row_file(tmp_path):
  f = tmp_path / "repro_toy.py"
  f.write_text(ROW_FILE.format(path=f, steps=STEPS))
  return f


def fake_run_dir(run: claims.Run, steps: int, final_eval: float, *, upto: int | None = None,
                 after: bool = True):
  """A run directory as train.py (and the after-run) would leave it, trained to `upto` steps."""
  upto = steps if upto is None else upto
  wd = run.workdir
  (wd / "checkpoints").mkdir(parents=True, exist_ok=True)
  (wd / "config.json").write_text(base.to_json(run.config()))
  with open(wd / "metrics.jsonl", "a") as f:
    for s in range(1, upto + 1):
      f.write(json.dumps({"step": s, "loss": 5.0 - s * 0.1 + run.seed * 0.01}) + "\n")
      if s % 2 == 0:
        ev = final_eval if s == steps else final_eval + (steps - s) * 0.5
        f.write(json.dumps({"step": s, "eval_loss": ev}) + "\n")
  for s in range(2, upto + 1, 2):
    (wd / "checkpoints" / str(s)).mkdir(exist_ok=True)
  if after and upto == steps:
    for a in run.variant.after:
      claims.after_path(wd, a).write_text(json.dumps(
          {"step": steps, "logit_scale": {"1.0": {"rel_loss_increase": 0.0},
                                          "2.0": {"rel_loss_increase": 0.1 + 0.02 * run.seed}}}))


# ---------------------------------------------------------------------------------------------
# The plan.

def test_plan_is_variants_times_seeds_with_workdirs_and_commands(row_file, tmp_path):
  row = claims.load_row(row_file)
  runs = claims.plan(row, None, tmp_path / "runs", ("train.lr=1e-3",))
  assert [r.name for r in runs] == ["a-s0", "a-s1", "b-s0", "b-s1"]
  assert runs[1].workdir == tmp_path / "runs" / "toy" / "a-s1"
  assert runs[1].train_argv("py") == [
      "py", "train.py", "--config", "configs/quickstart.py", "--workdir",
      str(tmp_path / "runs" / "toy" / "a-s1"), f"train.steps={STEPS}", "train.warmup_steps=1",
      "train.eval_every=2", "model.n_layers=1", "train.seed=1", "train.lr=1e-3"]
  assert runs[0].after_argv(row.variants[0].after[0], "py") == [
      "py", "eval.py", "--logit-scale", "1", "2", "--workdir", str(runs[0].workdir)]
  cfg = runs[3].config()
  assert (cfg.train.seed, cfg.model.n_layers, cfg.train.lr) == (1, 2, 1e-3)
  assert len(claims.plan(row, 3, tmp_path)) == 6


def test_dry_run_prints_the_plan_and_estimate_and_runs_nothing(row_file, tmp_path, capsys,
                                                               monkeypatch):
  monkeypatch.setattr(reproduce, "call", lambda *a: pytest.fail("ran something"))
  assert reproduce.main([str(row_file), "--runs", str(tmp_path), "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "4 runs (2 variants x 2 seeds)" in out and "estimate: ~" in out
  assert out.count(" new ") == 4
  assert reproduce.main([str(row_file), "--runs", str(tmp_path), "--dry-run",
                         "train.warmup_steps=99"]) == 2      # refused before anything runs


# ---------------------------------------------------------------------------------------------
# The runner: complete runs skipped, others resumed, a failure reported and the sweep continued.

class FakeTrain:
  """subprocess.run for reproduce.py: train.py trains its workdir to the end (as from its last
  checkpoint), eval.py prints the JSON; `fail` names runs whose train.py exits 1."""

  def __init__(self, row, runs_root, fail=()):
    self.runs = {str(r.workdir): r for r in claims.plan(row, None, runs_root)}
    self.calls, self.fail = [], set(fail)

  def __call__(self, argv, stdout, stderr):
    wd = argv[argv.index("--workdir") + 1]
    run = self.runs[wd]
    self.calls.append((argv[1], run.name))
    if argv[1] == "train.py":
      if run.name in self.fail:
        stderr.write("boom\n")
        return 1
      start = claims.trained_to(run.workdir)
      fake_run_dir(run, STEPS, 2.0, after=False)
      assert claims.trained_to(run.workdir) == STEPS and start in (0, 2)
    else:
      stdout.write(json.dumps({"step": STEPS, "logit_scale": {}}))
    return 0


def test_runner_skips_done_resumes_partial_and_continues_after_a_failure(row_file, tmp_path,
                                                                         monkeypatch, capsys):
  row = claims.load_row(row_file)
  runs = {r.name: r for r in claims.plan(row, None, tmp_path)}
  fake_run_dir(runs["a-s0"], STEPS, 2.0)                 # complete
  fake_run_dir(runs["b-s0"], STEPS, 2.0, upto=2)         # interrupted at step 2
  fake_run_dir(runs["a-s1"], STEPS, 2.0, after=False)    # trained, its after-run missing
  fake = FakeTrain(row, tmp_path, fail={"b-s1"})
  monkeypatch.setattr(reproduce, "call", fake)

  assert reproduce.main([str(row_file), "--runs", str(tmp_path)]) == 1
  assert fake.calls == [("eval.py", "a-s1"), ("train.py", "b-s0"), ("train.py", "b-s1")]
  out = capsys.readouterr().out
  assert "resume from step 2" in out and "after-run only" in out
  assert "FAILED: train.py exit 1" in out and "boom" in out and "1 of 4 runs failed: b-s1" in out
  assert json.loads((runs["a-s1"].workdir / "amp.json").read_text())["step"] == STEPS
  assert not list(runs["a-s1"].workdir.glob("*.tmp"))
  assert json.loads((runs["b-s0"].workdir / "repro.json").read_text())["argv"][1] == "train.py"

  fake.calls, fake.fail = [], set()                      # rerun: only the failed run again
  assert reproduce.main([str(row_file), "--runs", str(tmp_path)]) == 0
  assert fake.calls == [("train.py", "b-s1")]
  assert all(claims.run_done(r, STEPS) for r in runs.values())


def test_after_run_output_kept_only_on_success(row_file, tmp_path, monkeypatch):
  row = claims.load_row(row_file)
  run = claims.plan(row, 1, tmp_path)[0]
  fake_run_dir(run, STEPS, 2.0, after=False)

  def bad_eval(argv, stdout, stderr):
    stdout.write("{not json")
    return 0
  monkeypatch.setattr(reproduce, "call", bad_eval)
  assert reproduce.main([str(row_file), "--runs", str(tmp_path), "--seeds", "1"]) == 1
  assert not claims.after_path(run.workdir, "amp").exists()
  assert not claims.run_done(run, STEPS)


# ---------------------------------------------------------------------------------------------
# results.py on synthetic run directories.

def test_metrics_rows_of_a_resumed_run_count_once():
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_loss": 9.0},
            {"step": 2, "loss": 2.5}, {"step": 2, "eval_loss": 8.0}]
    Path(d, "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"st')
    assert claims.series(Path(d), "loss") == ([1, 2], [3.0, 2.5])
    assert claims.series(Path(d), "eval_loss") == ([2], [8.0])


def test_stat_and_per_seed_relative_figures():
  m = claims.Measured(None)                  # a Measured's figures need no row
  m.values = {"a": {"f": {0: 2.0, 1: 4.0}}, "b": {"f": {0: 2.2, 1: 4.8, 2: 9.9}}}
  assert m.stat("a", "f").mean == 3.0
  assert m.stat("a", "f").spread == pytest.approx(2 ** 0.5)
  rel = m.rel("b", "a", "f")                 # seed 2 has no partner: left out
  assert rel.values == pytest.approx((0.1, 0.2)) and rel.mean == pytest.approx(0.15)
  assert m.stat("a", "f").fmt() == "3.000 ± 1.414 (n=2)"
  assert rel.fmt(pct=True) == "+15.0% ± 7.1% (n=2)"
  assert claims.Stat(()).fmt() == "—"


def test_results_table_verdict_and_plot_then_not_run_yet(row_file, tmp_path):
  row = claims.load_row(row_file)
  runs = {r.name: r for r in claims.plan(row, None, tmp_path / "runs")}
  finals = {"a-s0": 2.0, "a-s1": 2.2, "b-s0": 2.2, "b-s1": 2.42}
  for name, r in runs.items():
    fake_run_dir(r, STEPS, finals[name])
  out = tmp_path / "docs"
  argv = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--row", str(row_file)]
  assert results.main(argv) == 0
  md = (out / "RESULTS.md").read_text()
  assert "| a | `quickstart.py` `model.n_layers=1` | 2.100 ± 0.141 (n=2) |" in md
  # early: eval at step 2 = final + 1.0; amp2 (a only): 0.10, 0.12; b has no after-run
  assert "| 3.100 ± 0.141 (n=2) | 0.110 ± 0.014 (n=2) |" in md
  assert "| b | `quickstart.py` `model.n_layers=2` | 2.310 ± 0.156 (n=2) | 3.310 ± 0.156 (n=2) | — |" in md
  assert "| b vs a | +10.0% ± 0.0% (n=2) |" in md     # per seed: 2.2/2.0, 2.42/2.2
  assert "**Verdict: reproduced.** b vs a +10.0%" in md
  assert "(stated before the runs): b above a: reproduced; otherwise not." in md
  assert f"`python benchmarks/reproduce.py {row.source}`" in md
  png = out / "figures" / "toy.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "![Toy claim](figures/toy.png)" in md

  # a run short of its final checkpoint: the row is "not run yet", no number, no figure
  (runs["b-s1"].workdir / "checkpoints" / str(STEPS)).rmdir()
  assert results.main(argv) == 0
  md = (out / "RESULTS.md").read_text()
  assert "not run yet (3/4 runs complete)" in md and "**Verdict:" not in md
  assert not re.search(r"\d\.\d{3} ± ", md) and not png.exists()

  # complete again, saved before a field existed (its default is what ran): counted
  (runs["b-s1"].workdir / "checkpoints" / str(STEPS)).mkdir()
  cfg = json.loads((runs["b-s1"].workdir / "config.json").read_text())
  del cfg["train"]["log_outliers"], cfg["model"]["sigma_reparam"]
  (runs["b-s1"].workdir / "config.json").write_text(json.dumps(cfg))
  results.main(argv)
  assert "**Verdict: reproduced.**" in (out / "RESULTS.md").read_text()

  # under other settings than the row asks for: not counted
  cfg["train"]["lr"] = 1.0
  (runs["b-s1"].workdir / "config.json").write_text(json.dumps(cfg))
  results.main(argv)
  assert "not run yet (3/4 runs complete)" in (out / "RESULTS.md").read_text()


def test_a_row_whose_runs_are_elsewhere_keeps_its_generated_entry(row_file, tmp_path):
  """Run directories do not travel between checkouts: regenerating RESULTS.md where a row has no
  runs keeps that row's entry and section (and figure) as generated where it ran."""
  import shutil
  row = claims.load_row(row_file)
  for r in claims.plan(row, None, tmp_path / "runs"):
    fake_run_dir(r, STEPS, 2.0 if r.variant.name == "a" else 2.2)
  out = tmp_path / "docs"
  argv = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--row", str(row_file)]
  assert results.main(argv) == 0
  first = (out / "RESULTS.md").read_text()
  section = first[first.index("## Toy claim"):]
  # the rows --row did not name, with no entry generated before, are listed as not run yet
  for f in claims.row_files():
    assert f"`python benchmarks/reproduce.py configs/{f.name}`" in first
  shutil.rmtree(tmp_path / "runs")
  assert results.main(argv) == 0
  md = (out / "RESULTS.md").read_text()
  toy = next(ln for ln in md.splitlines() if ln.startswith("| [Toy claim]"))
  assert section in md and "not run yet" not in toy
  assert (out / "figures" / "toy.png").exists()
  # a sweep under way (some runs here, not all complete) replaces the old numbers
  r0 = claims.plan(row, None, tmp_path / "runs")[0]
  fake_run_dir(r0, STEPS, 2.0, upto=2)
  assert results.main(argv) == 0
  md = (out / "RESULTS.md").read_text()
  assert "not run yet (0/4 runs complete)" in md and "**Verdict:" not in md


def test_results_with_no_runs_lists_every_row_with_its_command(tmp_path):
  assert results.main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path)]) == 0
  md = (tmp_path / "RESULTS.md").read_text()
  for f in claims.row_files():
    row = claims.load_row(f)
    assert f"`python benchmarks/reproduce.py configs/{f.name}`" in md
    assert f"not run yet (0/{len(row.variants) * row.seeds} runs complete)" in md
  assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").iterdir())


# ---------------------------------------------------------------------------------------------
# The row files.

@pytest.mark.parametrize("path", claims.row_files(), ids=lambda p: p.stem)
def test_every_row_file_loads_and_its_runs_validate(path):
  row = claims.load_row(path)
  src = path.read_text()
  assert re.search(rf"^\s+python benchmarks/reproduce.py configs/{path.name}", src, re.MULTILINE), \
      "a row file opens with the command that runs its sweep"
  assert row.seeds >= 2 and row.claim and row.citation and row.accelerator and row.budget
  assert row.verdict.__doc__ and row.headline and row.panels   # the rule, in words
  for run in claims.plan(row):
    assert (ROOT / run.variant.config).is_file()
    run.config()                                # loads and validates (a ConfigError fails)
  # the verdict rule runs on made-up figures and returns one of the three verdicts
  m = claims.Measured(row)
  for i, v in enumerate(row.variants):
    for k in row.figures:
      m.values.setdefault(v.name, {})[k] = {s: 2.0 + 0.01 * i + 0.001 * s for s in range(row.seeds)}
  assert row.verdict(m).result in claims.VERDICTS


def test_scripts_import_no_entry_script():
  for f in ("claims.py", "reproduce.py", "results.py"):
    src = (ROOT / "benchmarks" / f).read_text()
    assert not re.search(r"^\s*(from|import) (train|eval|export|reproduce|results)\b", src, re.MULTILINE), f
  assert sys.modules["benchmarks.claims"] is claims


def test_ctrl_c_waits_for_the_child_to_save_then_stops_the_sweep(row_file, tmp_path, monkeypatch,
                                                                capsys):
  class Child:           # train.py got the terminal's Ctrl-C too: it saves, then exits 130
    waits, killed = 0, False

    def __init__(self, *a, **k):
      pass

    def wait(self):
      Child.waits += 1
      if Child.waits == 1:
        raise KeyboardInterrupt
      return 130

    def kill(self):
      Child.killed = True
  monkeypatch.setattr(claims, "git_commit", lambda: "abc1234")
  monkeypatch.setattr(reproduce.subprocess, "Popen", Child)
  assert reproduce.main([str(row_file), "--runs", str(tmp_path)]) == 130
  assert (Child.waits, Child.killed) == (2, False)
  assert "interrupted at a-s0: rerun the same command to continue" in capsys.readouterr().out


def test_call_runs_a_command_from_the_repo_root(tmp_path):
  with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
    rc = reproduce.call([sys.executable, "-c", "import os; print(os.getcwd())"], out, err)
  assert rc == 0 and (tmp_path / "out").read_text().strip() == str(ROOT)
