"""`ptb_reproduce.py` (plans, dry runs, one tiny study on JAX) and
`ptb_report.py` on that study."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

STUDY_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "benchmarks",
    "ptb",
)
sys.path.insert(0, STUDY_DIR)

import ptb_language_model  # noqa: E402
import ptb_reproduce  # noqa: E402

SCRIPT = os.path.join(STUDY_DIR, "ptb_reproduce.py")

from ptb_helpers import data_dir as _data_dir  # noqa: E402
from ptb_helpers import requires_data  # noqa: E402


def _dry_run(capsys, argv):
    assert ptb_reproduce.main(argv + ["--dry-run"]) == 0
    jobs = {}
    for line in capsys.readouterr().out.splitlines():
        name, command = line.split(": ", 1)
        assert name not in jobs
        jobs[name] = command.split()
    return jobs


def _option(argv, name):
    return argv[argv.index(name) + 1]


def test_dry_run_lists_the_small_study(tmp_path, capsys):
    out = str(tmp_path / "study")
    jobs = _dry_run(
        capsys, ["--configs", "small", "--out", out, "--data-dir", "/ptb"]
    )
    budgets = ("0.5", "0.3", "0.15")
    expected = ["small-dense"]
    for budget in budgets:
        expected += [
            f"small-gated-{budget}",
            f"small-gated-{budget}-shrink",
            f"small-magnitude-{budget}",
            f"small-retrain-{budget}",
        ]
    assert list(jobs) == expected
    assert not os.path.exists(out)

    dense = jobs["small-dense"]
    assert dense[:2] == [
        sys.executable,
        os.path.join(STUDY_DIR, "ptb_language_model.py"),
    ]
    for budget in budgets:
        gated = jobs[f"small-gated-{budget}"]
        gated_dir = os.path.join(out, f"small-gated-{budget}")
        assert _option(gated, "--budget") == budget
        assert _option(gated, "--out") == gated_dir
        shrink = jobs[f"small-gated-{budget}-shrink"]
        assert shrink[1] == os.path.join(STUDY_DIR, "ptb_shrink.py")
        assert shrink[2] == os.path.join(gated_dir, "model.keras")
        assert _option(shrink, "--config") == "small"
        assert _option(shrink, "--data-dir") == "/ptb"
        assert jobs[f"small-magnitude-{budget}"] == [
            "<after", "small-dense", f"small-gated-{budget}", ">",
        ]  # fmt: skip
        retrain = jobs[f"small-retrain-{budget}"]
        assert _option(retrain, "--from") == os.path.join(
            gated_dir, "slim.keras"
        )
        assert _option(retrain, "--out") == os.path.join(
            out, f"small-retrain-{budget}"
        )
    # The training commands are valid for ptb_language_model.py.
    for name in ["small-dense"] + [f"small-gated-{b}" for b in budgets]:
        argv = jobs[name][2:]
        assert "--resume" not in argv
        args = ptb_language_model.build_parser().parse_args(argv)
        ptb_language_model.check_args(args)
        assert (args.config, args.data_dir, args.eval_batch_size) == (
            "small", "/ptb", 1,
        )  # fmt: skip
    recipe = ptb_reproduce.RECIPES["small"]
    gated = ptb_language_model.build_parser().parse_args(
        jobs["small-gated-0.3"][2:]
    )
    assert (gated.model, gated.budget, gated.l0_penalty) == (
        "gated", 0.3, recipe.l0_penalty,
    )  # fmt: skip
    assert (gated.budget_epochs, gated.budget_start) == (
        recipe.budget_epochs,
        recipe.budget_start,
    )
    assert (gated.finetune_epochs, gated.finetune_lr) == (
        recipe.finetune_epochs,
        recipe.gated_lr,
    )
    assert gated.finetune_decay == recipe.finetune_decay
    retrain = ptb_language_model.build_parser().parse_args(
        jobs["small-retrain-0.3"][2:]
    )
    assert (retrain.model, retrain.finetune_epochs, retrain.finetune_lr) == (
        "retrain", recipe.finetune_epochs, recipe.magnitude_lr,
    )  # fmt: skip
    assert retrain.finetune_decay == recipe.finetune_decay


def test_dry_run_budgets_and_extra(tmp_path, capsys):
    jobs = _dry_run(
        capsys,
        ["--configs", "tiny,small", "--budgets", "small=0.4,0.2",
         "--out", str(tmp_path), "--extra", "--max-steps 5 --epochs 1",
         "--eval-batch-size", "7"],
    )  # fmt: skip
    assert list(jobs) == [
        "tiny-dense", "tiny-gated-0.5", "tiny-gated-0.5-shrink",
        "tiny-magnitude-0.5", "tiny-retrain-0.5",
        "small-dense", "small-gated-0.4", "small-gated-0.4-shrink",
        "small-magnitude-0.4", "small-retrain-0.4", "small-gated-0.2",
        "small-gated-0.2-shrink", "small-magnitude-0.2", "small-retrain-0.2",
    ]  # fmt: skip
    for name in ("tiny-dense", "small-gated-0.4", "small-retrain-0.2"):
        argv = jobs[name]
        assert argv[-4:] == ["--max-steps", "5", "--epochs", "1"]
        assert _option(argv, "--eval-batch-size") == "7"
        assert "--data-dir" not in argv
    assert _option(jobs["small-gated-0.2-shrink"], "--eval-batch-size") == "7"


def test_unknown_config_is_a_usage_error(tmp_path, capsys):
    argv = ["--configs", "small,huge", "--out", str(tmp_path), "--dry-run"]
    assert ptb_reproduce.main(argv) == 2
    captured = capsys.readouterr()
    assert "huge" in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""
    assert ptb_reproduce.main(["--configs", "tiny", "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err


def _write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _write_gated_results(out, second_layer_units):
    """The kept neurons of a finished tiny gated run: 7 embedding
    dimensions, 5 and `second_layer_units` hidden units."""
    neurons = [
        dict(name="a", inputs=16, inputs_active=7, units=16, units_active=5),
        dict(
            name="b",
            inputs=16,
            inputs_active=16,
            units=16,
            units_active=second_layer_units,
        ),
    ]
    _write_json(
        os.path.join(out, "tiny-gated-0.5", "results.json"),
        dict(neurons=neurons),
    )


def test_magnitude_keeps_the_gated_runs_sizes(tmp_path):
    out = str(tmp_path)
    args = ptb_reproduce.build_parser().parse_args(
        ["--configs", "tiny", "--out", out]
    )
    jobs = {job.name: job for job in ptb_reproduce.plan(args)}
    magnitude = jobs["tiny-magnitude-0.5"]
    assert magnitude.argv is None
    assert set(magnitude.after) == {"tiny-dense", "tiny-gated-0.5"}
    assert jobs["tiny-retrain-0.5"].after == ("tiny-gated-0.5-shrink",)
    assert jobs["tiny-gated-0.5-shrink"].after == ("tiny-gated-0.5",)
    assert "--budget-horizon" not in jobs["tiny-gated-0.5"].argv
    assert "--budget-rise-gain" not in jobs["tiny-gated-0.5"].argv
    # The kept sizes are read when the job starts, after the gated run.
    _write_gated_results(out, second_layer_units=0)
    argv = magnitude.make_argv()
    assert _option(argv, "--keep") == "7,5,1"
    assert _option(argv, "--dense-model") == os.path.join(
        out, "tiny-dense", "model.keras"
    )
    assert "--resume" not in argv
    # An interrupted run (state.json, no results.json) is resumed.
    _write_json(os.path.join(out, "tiny-magnitude-0.5", "state.json"), {})
    assert magnitude.make_argv()[-1] == "--resume"
    _write_json(os.path.join(out, "tiny-dense", "state.json"), {})
    jobs = {job.name: job for job in ptb_reproduce.plan(args)}
    assert jobs["tiny-dense"].argv[-1] == "--resume"
    assert "--resume" not in jobs["tiny-gated-0.5"].argv


def test_from_dense_recipe_starts_the_gates_on_the_dense_model(
    tmp_path, monkeypatch
):
    out = str(tmp_path)
    tiny = ptb_reproduce.RECIPES["tiny"]
    recipe = dataclasses.replace(tiny, from_dense=True, gated_epochs=2)
    monkeypatch.setitem(ptb_reproduce.RECIPES, "tiny", recipe)
    args = ptb_reproduce.build_parser().parse_args(
        ["--configs", "tiny", "--out", out]
    )
    jobs = {job.name: job for job in ptb_reproduce.plan(args)}
    assert list(jobs) == [
        "tiny-dense", "tiny-gated-0.5", "tiny-gated-0.5-shrink",
        "tiny-magnitude-0.5",
    ]  # fmt: skip
    dense_model = os.path.join(out, "tiny-dense", "model.keras")
    gated = jobs["tiny-gated-0.5"]
    assert gated.after == ("tiny-dense",)
    assert _option(gated.argv, "--dense-model") == dense_model
    assert _option(gated.argv, "--epochs") == "2"
    assert float(_option(gated.argv, "--lr")) == recipe.gated_lr
    parsed = ptb_language_model.build_parser().parse_args(gated.argv[2:])
    assert (parsed.finetune_epochs, parsed.finetune_lr) == (
        recipe.finetune_epochs,
        recipe.gated_lr,
    )
    _write_gated_results(out, second_layer_units=3)
    argv = jobs["tiny-magnitude-0.5"].make_argv()
    assert _option(argv, "--dense-model") == dense_model
    # The same extra epochs as the gated model: gate training + fine-tuning.
    assert _option(argv, "--finetune-epochs") == str(2 + recipe.finetune_epochs)
    assert _option(argv, "--finetune-hold") == "2"


def test_from_dense_flag(tmp_path, capsys):
    jobs = _dry_run(
        capsys,
        ["--configs", "small", "--budgets", "small=0.3", "--out",
         str(tmp_path), "--from-dense", "3", "--l0-penalty", "2e-5"],
    )  # fmt: skip
    assert list(jobs) == [
        "small-dense", "small-gated-0.3", "small-gated-0.3-shrink",
        "small-magnitude-0.3",
    ]  # fmt: skip
    gated = jobs["small-gated-0.3"]
    assert _option(gated, "--dense-model").endswith("model.keras")
    assert _option(gated, "--epochs") == "3"
    assert _option(gated, "--budget-epochs") == "2"
    assert _option(gated, "--l0-penalty") == "2e-05"
    assert _option(gated, "--budget-horizon") == "0"
    assert _option(gated, "--budget-rise-gain") == "0.25"
    recipe = ptb_reproduce.RECIPES["small"]
    assert float(_option(gated, "--lr")) == recipe.magnitude_lr
    assert float(_option(gated, "--finetune-lr")) == recipe.magnitude_lr
    assert ptb_reproduce.main(
        ["--from-dense", "0", "--out", str(tmp_path), "--dry-run"]
    ) == 2
    assert "--from-dense must be >= 1" in capsys.readouterr().err
    for bad in (["--gated-lr", "0.25"], ["--from-dense", "3", "--gated-lr", "0"]):
        assert ptb_reproduce.main(
            [*bad, "--out", str(tmp_path), "--dry-run"]
        ) == 2
        assert "--gated-lr must be > 0" in capsys.readouterr().err


def test_gated_lr_sets_both_pruned_models_rates(tmp_path, capsys):
    out = str(tmp_path)
    args = ptb_reproduce.build_parser().parse_args(
        ["--configs", "tiny", "--out", out, "--from-dense", "2",
         "--gated-lr", "0.25", "--finetune-epochs", "3"]
    )  # fmt: skip
    jobs = {job.name: job for job in ptb_reproduce.plan(args)}
    gated = jobs["tiny-gated-0.5"].argv
    assert _option(gated, "--lr") == "0.25"
    assert _option(gated, "--finetune-lr") == "0.25"
    assert _option(gated, "--finetune-epochs") == "3"
    _write_gated_results(out, second_layer_units=3)
    magnitude = jobs["tiny-magnitude-0.5"].make_argv()
    assert _option(magnitude, "--finetune-lr") == "0.25"
    assert _option(magnitude, "--finetune-hold") == "2"
    assert _option(magnitude, "--finetune-epochs") == "5"
    assert ptb_reproduce.main(
        ["--finetune-epochs", "0", "--out", out, "--dry-run"]
    ) == 2
    assert "--finetune-epochs must be >= 1" in capsys.readouterr().err


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """One tiny study on JAX, shared by the study and report tests."""
    if _data_dir() is None:
        pytest.skip("Penn Treebank folder not found")
    out = str(tmp_path_factory.mktemp("ptb_study") / "study")
    command = [
        sys.executable, SCRIPT, "--configs", "tiny", "--jobs", "2",
        "--out", out, "--data-dir", _data_dir(), "--max-steps", "3",
        "--extra", "--epochs 1",
    ]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=400
    )
    return command, env, out, result


@requires_data
def test_tiny_study_runs_then_skips_finished_runs(tiny_study):
    command, env, out, result = tiny_study
    logs = {
        name: open(os.path.join(out, name), encoding="utf-8").read()[-1500:]
        for name in sorted(os.listdir(out))
        if name.endswith(".log")
    } if os.path.isdir(out) else {}  # fmt: skip
    assert result.returncode == 0, (result.stdout, result.stderr, logs)
    names = [
        "tiny-dense", "tiny-gated-0.5", "tiny-gated-0.5-shrink",
        "tiny-magnitude-0.5", "tiny-retrain-0.5",
    ]  # fmt: skip
    for name in names:
        assert f"] {name} started" in result.stdout
        assert f"] {name} done" in result.stdout
    assert "failed: none" in result.stdout
    # The dependent runs start after their inputs are done.
    position = result.stdout.index
    assert position("tiny-gated-0.5 done") < position(
        "tiny-gated-0.5-shrink started"
    )
    assert position("tiny-gated-0.5-shrink done") < position(
        "tiny-retrain-0.5 started"
    )
    for before in ("tiny-dense done", "tiny-gated-0.5 done"):
        assert position(before) < position("tiny-magnitude-0.5 started")

    study = _load(os.path.join(out, "study.json"))
    assert sorted(study) == [
        "tiny-dense", "tiny-gated-0.5", "tiny-magnitude-0.5",
        "tiny-retrain-0.5",
    ]  # fmt: skip
    assert sorted(study["tiny-gated-0.5"]) == ["results.json", "shrink.json"]
    for name in ("tiny-dense", "tiny-magnitude-0.5", "tiny-retrain-0.5"):
        assert list(study[name]) == ["results.json"]
        assert study[name]["results.json"] == _load(
            os.path.join(out, name, "results.json")
        )
    results = {name: study[name]["results.json"] for name in study}
    assert [results[name]["model"] for name in sorted(results)] == [
        "dense", "gated", "magnitude", "retrain",
    ]  # fmt: skip
    for entry in results.values():
        assert entry["max_windows"] == 3 and entry["eval_batch_size"] == 1

    # The magnitude model was pruned to the gated model's kept sizes.
    gated = results["tiny-gated-0.5"]["neurons"]
    kept = [gated[0]["inputs_active"]] + [e["units_active"] for e in gated]
    kept = [max(size, 1) for size in kept]
    state = _load(os.path.join(out, "tiny-magnitude-0.5", "state.json"))
    assert state["args"]["keep"] == kept
    magnitude = results["tiny-magnitude-0.5"]["neurons"]
    assert [magnitude[0]["inputs"]] + [e["units"] for e in magnitude] == kept
    # The budget recipe reached the gated run.
    recipe = ptb_reproduce.RECIPES["tiny"]
    state = _load(os.path.join(out, "tiny-gated-0.5", "state.json"))
    assert state["args"]["budget"] == 0.5
    assert state["args"]["budget_epochs"] == recipe.budget_epochs
    assert state["args"]["finetune_decay"] == recipe.finetune_decay
    assert [e["phase"] for e in results["tiny-gated-0.5"]["history"]] == [
        "train", "finetune",
    ]  # fmt: skip
    # The retrained model is the slim one, fine-tuned.
    slim = study["tiny-gated-0.5"]["shrink.json"]["slim"]
    retrain = results["tiny-retrain-0.5"]
    assert retrain["neurons"] == slim["neurons"]
    assert retrain["params"] == slim["params"]
    assert [e["lr"] for e in retrain["history"]] == [recipe.magnitude_lr]

    # Again: everything is finished, nothing starts.
    again = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "started" not in again.stdout
    assert "failed: none" in again.stdout
    assert _load(os.path.join(out, "study.json")) == study


def test_direct_design_and_fixed_size_runs(tmp_path, capsys):
    out = str(tmp_path)
    jobs = _dry_run(
        capsys,
        ["--configs", "medium", "--budgets", "medium=0.25,0.1", "--out", out,
         "--from-dense", "4", "--direct", "budget",
         "--direct-sizes", "medium=650,300,200",
         "--magnitude-sizes", "medium=650,300,200",
         "--magnitude-sizes", "large=1500,373,315",
         "--dense-schedule", "medium=20,5,0.7"],
    )  # fmt: skip
    assert list(jobs) == [
        "medium-dense", "medium-direct-0.25", "medium-direct-0.1",
        "medium-direct-650-300-200", "medium-gated-0.25",
        "medium-gated-0.25-shrink", "medium-magnitude-0.25", "medium-gated-0.1",
        "medium-gated-0.1-shrink", "medium-magnitude-0.1",
        "medium-magnitude-650-300-200",
    ]  # fmt: skip
    parse = ptb_language_model.build_parser().parse_args
    for name, sizes in (("medium-direct-0.25", [324] * 3),
                        ("medium-direct-0.1", [205] * 3),
                        ("medium-direct-650-300-200", [650, 300, 200])):  # fmt: skip
        args = parse(jobs[name][2:])
        ptb_language_model.check_args(args)
        assert (args.model, args.sizes) == ("dense", sizes)
        # The dense recipe, shortened like the dense run's.
        assert (args.epochs, args.decay_after, args.lr_decay) == (20, 5, 0.7)
    dense = parse(jobs["medium-dense"][2:])
    assert (dense.epochs, dense.decay_after, dense.lr_decay, dense.sizes) == (
        20, 5, 0.7, None,
    )  # fmt: skip
    assert parse(jobs["medium-gated-0.1"][2:]).decay_after is None
    magnitude = parse(jobs["medium-magnitude-650-300-200"][2:])
    assert magnitude.keep == [650, 300, 200]
    assert magnitude.dense_model == os.path.join(out, "medium-dense", "model.keras")
    assert magnitude.finetune_hold == 4
    # The uniform width keeps the LSTM stack within the budget.
    for budget in (0.25, 0.1):
        sizes = ptb_reproduce.uniform_sizes(650, 2, budget)
        dense_params = ptb_reproduce.lstm_params([650] * 3)
        assert ptb_reproduce.lstm_params(sizes) <= budget * dense_params
        wider = [sizes[0] + 1] * 3
        assert ptb_reproduce.lstm_params(wider) > budget * dense_params
    assert ptb_reproduce.lstm_params([650] * 3) == 6_765_200
    assert ptb_reproduce.lstm_params([1500, 373, 315]) == 3_664_148


def test_direct_design_at_the_kept_sizes_follows_the_gated_run(tmp_path):
    out = str(tmp_path)
    args = ptb_reproduce.build_parser().parse_args(
        ["--configs", "tiny", "--out", out, "--from-dense", "1", "--direct", "kept"]
    )
    jobs = {job.name: job for job in ptb_reproduce.plan(args)}
    direct = jobs["tiny-direct-0.5"]
    assert direct.argv is None and direct.after == ("tiny-gated-0.5",)
    assert list(jobs)[-1] == "tiny-direct-0.5"
    _write_gated_results(out, second_layer_units=3)
    argv = direct.make_argv()
    assert _option(argv, "--sizes") == "7,5,3"
    assert _option(argv, "--model") == "dense"
    assert "--dense-model" not in argv


def test_bad_sizes_and_schedules_are_usage_errors(tmp_path, capsys):
    for bad in (["--direct-sizes", "large=1500,373"],
                ["--magnitude-sizes", "large"],
                ["--dense-schedule", "large=40,12,1.5"]):  # fmt: skip
        with pytest.raises(SystemExit) as raised:
            ptb_reproduce.main([*bad, "--out", str(tmp_path), "--dry-run"])
        assert raised.value.code == 2
        assert bad[0] in capsys.readouterr().err
    assert ptb_reproduce.main(["--time-limit", "0", "--dry-run"]) == 2
    assert "--time-limit must be > 0" in capsys.readouterr().err


def test_time_limit_stops_the_running_jobs_and_the_same_command_resumes(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "study"
    marker = out / "quick" / "results.json"
    quick = [sys.executable, "-c",
             f"import os; os.makedirs({str(marker.parent)!r}, exist_ok=True); "
             f"open({str(marker)!r}, 'w').write('{{}}')"]  # fmt: skip
    slow_marker = out / "slow" / "results.json"
    slow = [sys.executable, "-c",
            "import os, sys, time\n"
            f"if not os.path.exists({str(out / 'go')!r}): time.sleep(600)\n"
            f"os.makedirs({str(slow_marker.parent)!r}, exist_ok=True)\n"
            f"open({str(slow_marker)!r}, 'w').write('{{}}')"]  # fmt: skip
    after = [sys.executable, "-c", "pass"]

    def fake_plan(args):
        return [
            ptb_reproduce.Job("quick", quick),
            ptb_reproduce.Job("slow", slow),
            ptb_reproduce.Job("after", after, after=("slow",)),
        ]

    monkeypatch.setattr(ptb_reproduce, "plan", fake_plan)
    argv = ["--out", str(out), "--jobs", "2", "--time-limit", "3"]
    assert ptb_reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    assert "slow stopped at the time limit" in printed
    assert "incomplete: 1 stopped, 1 not started" in printed
    assert "resume with: " in printed and "--time-limit 3" in printed
    progress = _load(out / "progress.json")
    assert progress["status"] == "incomplete"
    assert (progress["done"], progress["stopped"], progress["not_started"]) == (
        ["quick"], ["slow"], ["after"],
    )  # fmt: skip
    # The same command again: the finished job is skipped, the rest run.
    (out / "go").write_text("")
    assert ptb_reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    assert "quick started" not in printed and "slow done" in printed
    assert "incomplete" not in printed
    assert _load(out / "progress.json")["status"] == "complete"


def test_gate_noise_flags_reach_the_gated_runs_only(tmp_path):
    argv = ["--configs", "tiny", "--out", str(tmp_path), "--from-dense", "2",
            "--initial-keep-probability", "0.77",
            "--budget-open-log-alpha", "1.2"]  # fmt: skip
    jobs = {job.name: job for job in ptb_reproduce.plan(
        ptb_reproduce.build_parser().parse_args(argv))}  # fmt: skip
    gated = ptb_language_model.build_parser().parse_args(
        jobs["tiny-gated-0.5"].argv[2:]
    )
    assert gated.initial_keep_probability == 0.77
    assert gated.budget_open_log_alpha == 1.2
    dense = jobs["tiny-dense"].argv
    assert "--initial-keep-probability" not in dense
    assert "--budget-open-log-alpha" not in dense


def test_small_from_dense_holds_its_kept_gates_noisy_by_default(tmp_path, capsys):
    study = ["--configs", "small,medium", "--budgets", "small=0.3",
             "--budgets", "medium=0.1", "--out", str(tmp_path),
             "--from-dense", "4", "--gated-lr", "0.25", "--finetune-epochs", "3",
             "--l0-penalty", "2e-6"]  # fmt: skip

    def gated(argv, name):
        jobs = _dry_run(capsys, argv)
        return ptb_language_model.build_parser().parse_args(jobs[name][2:])

    small = gated(study, "small-gated-0.3")
    assert (small.initial_keep_probability, small.budget_open_log_alpha) == (0.77, 1.2)
    medium = gated(study, "medium-gated-0.1")
    assert (medium.initial_keep_probability, medium.budget_open_log_alpha) == (None, None)
    plain = gated([*study, "--package-gate-defaults"], "small-gated-0.3")
    assert (plain.initial_keep_probability, plain.budget_open_log_alpha) == (None, None)
    chosen = gated([*study, "--budget-open-log-alpha", "2.2"], "small-gated-0.3")
    assert (chosen.initial_keep_probability, chosen.budget_open_log_alpha) == (0.77, 2.2)
    scratch = ["--configs", "small", "--budgets", "small=0.3", "--out", str(tmp_path)]
    from_scratch = gated(scratch, "small-gated-0.3")
    assert from_scratch.budget_open_log_alpha is None
    for bad in (scratch, [*study, "--initial-keep-probability", "0.9"]):
        assert ptb_reproduce.main([*bad, "--package-gate-defaults", "--dry-run"]) == 2
        assert "--package-gate-defaults needs --from-dense" in capsys.readouterr().err


def test_a_job_runs_under_its_own_backend(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    marker = out / "tfmot" / "results.json"
    write_backend = [
        sys.executable, "-c",
        f"import json, os; os.makedirs({str(marker.parent)!r}, exist_ok=True); "
        f"json.dump(os.environ['KERAS_BACKEND'], open({str(marker)!r}, 'w'))",
    ]  # fmt: skip
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(
        ptb_reproduce,
        "plan",
        lambda args: [
            ptb_reproduce.Job(
                "tfmot", write_backend, env={"KERAS_BACKEND": "tensorflow"}
            )
        ],
    )
    assert ptb_reproduce.main(["--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("tfmot: KERAS_BACKEND=tensorflow ")
    assert ptb_reproduce.main(["--out", str(out)]) == 0
    assert _load(marker) == "tensorflow"


def _report(args, tmp_path):
    env = dict(os.environ, KERAS_L0_PTB_DIR=_data_dir(), KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@requires_data
def test_report_on_a_tiny_study(tiny_study, tmp_path):
    """`ptb_report.py` exports, times and writes its page, JSON and plot."""
    pytest.importorskip("ai_edge_litert")
    _, _, runs, study = tiny_study
    assert study.returncode == 0, study.stdout[-2000:] + study.stderr[-2000:]
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\ntail\n")
    report = _report(
        [
            os.path.join(STUDY_DIR, "ptb_report.py"),
            "--runs",
            str(runs),
            "--runs",
            f"again={runs}",
            "--configs",
            "tiny",
            "--runs-per-file",
            "2",
            "--json",
            str(tmp_path / "ptb.json"),
            "--plot",
            str(tmp_path / "ptb.png"),
            "--page",
            str(page),
            "--budget-runs",
            str(tmp_path / "none"),
            "--budget-runs",
            str(runs),
        ],
        tmp_path,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    configs = json.loads((tmp_path / "ptb.json").read_text())["configs"]
    assert list(configs) == ["tiny", "tiny, again"]
    assert configs["tiny, again"]["config"] == "tiny"
    result = configs["tiny"]
    dense = result["dense"]
    assert dense["sizes"] == [16, 16, 16]
    assert set(dense["latency_ms"]) == {"model", "stack", "model_step", "stack_step"}
    assert all(ms > 0 for ms in dense["latency_ms"].values())
    (row,) = result["budgets"]
    gated, magnitude = row["gated"], row["magnitude"]
    assert gated["sizes"] == magnitude["sizes"]
    assert gated["lstm_params"] <= dense["lstm_params"]
    assert max(gated["max_diff_keras_tflite"].values()) < 1e-4
    assert "--model retrain" in row["gated_retrained"]["command"]
    assert "--model magnitude" in magnitude["command"]
    assert gated["from_dense"] is False
    assert "--model gated" in gated["command"]
    assert "input-gates" not in gated["command"]
    text = page.read_text()
    assert text.startswith("intro\n<!-- results:begin -->\n### tiny")
    assert text.endswith("<!-- results:end -->\ntail\n")
    assert "old" not in text
    assert "\n### tiny, again (16/16/16)\n" in text
    assert f"Runs: `{runs}`." in text
    assert (tmp_path / "ptb.png").stat().st_size > 10000
    budget_control = json.loads((tmp_path / "ptb.json").read_text())["budget_control"]
    # Twice from the two study tables, once more as a budget-only run.
    assert [entry["budget"] for entry in budget_control] == [row["budget"]] * 3
    assert [("sizes" in entry) for entry in budget_control] == [False, False, True]
    assert budget_control[2]["sizes"] == gated["sizes"]
    assert budget_control[2]["reached"] == pytest.approx(gated["budget_reached"])
    assert "| tiny | from scratch | " in text
    assert "# budget control only\n" in text


def test_report_without_runs_is_a_usage_error(tmp_path):
    result = _report(
        [os.path.join(STUDY_DIR, "ptb_report.py"), "--runs", str(tmp_path / "x")],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ptb_report.py: error: no run folder {str(tmp_path / 'x')!r}"
    ]


def test_baselines_follow_the_gated_run_with_its_budget(tmp_path, capsys):
    """Every baseline job runs after its gated run, at its kept sizes, with
    the gated run's epochs and rates, in a command its script accepts."""
    import importlib

    out = str(tmp_path)
    argv = ["--configs", "tiny", "--out", out, "--from-dense", "2",
            "--gated-lr", "0.5", "--finetune-epochs", "3",
            "--baselines", "iss,darb,lds,tfmot",
            "--extra", "--steps-per-execution 4"]  # fmt: skip
    jobs = {job.name: job for job in ptb_reproduce.plan(
        ptb_reproduce.build_parser().parse_args(argv))}  # fmt: skip
    _write_gated_results(out, second_layer_units=3)
    scripts = {"iss": "ptb_baseline", "darb": "ptb_baseline",
               "lds": "ptb_lds", "tfmot": "ptb_tfmot"}  # fmt: skip
    for method, module in scripts.items():
        job = jobs[f"tiny-{method}-0.5"]
        assert job.argv is None
        assert job.after == ("tiny-dense", "tiny-gated-0.5")
        command = job.make_argv()
        assert os.path.basename(command[1]) == f"{module}.py"
        args = importlib.import_module(module).build_parser().parse_args(
            command[2:]
        )
        assert args.keep == [7, 5, 3] or args.keep == (7, 5, 3) or (
            args.keep == "7,5,3"
        )
        assert args.dense_model == os.path.join(out, "tiny-dense", "model.keras")
        assert args.out == os.path.join(out, f"tiny-{method}-0.5")
        assert args.config == "tiny" and args.eval_batch_size == 1
        expected_env = {"KERAS_BACKEND": "tensorflow"} if method == "tfmot" else {}
        assert job.env == expected_env
        if method == "tfmot":
            # Its own training loop: no --extra (TFMOT counts steps per batch).
            assert "--steps-per-execution" not in command
            assert (args.epochs, args.ramp_epochs) == (5, 2)
            assert (args.lr, args.lr_decay) == (0.5, 0.5)
        else:
            assert args.steps_per_execution == 4
        if method in ("iss", "darb"):
            assert args.method == method
            assert (args.epochs, args.finetune_epochs) == (2, 3)
            assert args.lr == args.finetune_lr == 0.5
            assert args.finetune_decay == 0.5
        if method == "lds":
            assert sum(_ints(args.epochs_per_stage)) == 5
            assert args.stages == len(_ints(args.epochs_per_stage))
            assert (args.lr, args.decay_after, args.lr_decay) == (0.5, 3, 0.5)
    assert ptb_reproduce.main(
        ["--baselines", "iss", "--out", out, "--dry-run"]
    ) == 2
    assert "--baselines needs --from-dense" in capsys.readouterr().err


def _ints(value):
    if isinstance(value, str):
        return [int(v) for v in value.split(",")]
    return list(value)
