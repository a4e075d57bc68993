"""The proving ground (recipes/reproduce.py): the --quick pipeline end to end on a tiny tower and LLM, its caching
and config checks, the claim checks and spreads against hand-made cases, and the QA score."""

import json

import numpy as np
import pytest
from conftest import load_recipe, tiny_baseline, tiny_run_config

from versavit_trainer.config import ConfigError
from versavit_trainer.evaluation import ground_report, ground_runs, ground_tables
from versavit_trainer.evaluation.qa import QAItem, majority_accuracy, normalize_answer, qa_accuracy


@pytest.fixture(scope="module")
def quick(tmp_path_factory, tiny_llm, tiny_miniature):
    folder = tmp_path_factory.mktemp("reproduce")
    base = tiny_run_config(folder, tiny_llm, save_strategy="no", report_to="none", panel_samples=0)
    argv = ["--quick", "--output_dir", str(folder / "out"), "--run_config", str(base), "--seeds", "0", "1",
            "--probe_size", "56"] + tiny_baseline(tiny_miniature)
    return folder, argv, load_recipe("reproduce").main(argv)


@pytest.mark.e2e
def test_quick_reproduction_writes_the_table_charts_figure_and_every_measurement(quick, tiny_miniature):
    folder, _, results = quick
    out = folder / "out"
    table = results["tables"]["table4"]
    assert table["arms"] == ["random", "baseline", "depth_only", "seg_only", "cap", "cap_depth", "cap_depth_seg"]
    assert [c["claim"] for c in table["claims"]] == list("abcde")
    # the instruments and claims follow from the numbers stored beside them: recomputed, and claim (c) by hand
    assert results["instruments"] == ground_report.check_instruments(
        results["arms"], {"qa_accuracy": results["majority_qa_accuracy"]})
    assert table["claims"] == ground_report.check_claims(ground_tables.TABLES["table4"], results["arms"],
                                                         results["instruments"])
    ours, theirs = results["arms"]["cap_depth"]["depth_rmse"], results["arms"]["cap"]["depth_rmse"]
    apart = (ours["mean"] + ours["std"] < theirs["mean"] - theirs["std"]
             or ours["mean"] - ours["std"] > theirs["mean"] + theirs["std"])
    (claim_c,) = [c for c in table["claims"] if c["claim"] == "c"]
    assert (claim_c["holds"], claim_c["separated"]) == (ours["mean"] < theirs["mean"], apart)
    for arm in table["arms"]:
        qa = ("qa_accuracy", "qa_grey") if ground_tables.ARMS[arm].qa else ()
        for key in ("depth_rmse", "depth_abs_rel", "depth_delta1", "seg_miou", "object_rmse", "background_iou",
                    "correspondence", "retrieval", "classification") + qa:
            stats = results["arms"][arm][key]
            assert len(stats["values"]) == 2 and np.isfinite(stats["values"]).all()
            assert stats["mean"] == pytest.approx(np.mean(stats["values"]))
            assert stats["std"] == pytest.approx(np.std(stats["values"], ddof=1))
        for seed in (0, 1):
            measured = json.loads((out / "measurements" / f"{arm}-seed{seed}.json").read_text())
            assert 0 <= measured["seg_miou"] <= 1 and ("qa_accuracy" in measured) == bool(qa)
            # the headline mIoU is over the shape classes; the wall and ground classes are reported apart
            shapes = [iou for name, iou in measured["per_class_iou"].items() if name not in ("wall", "ground")]
            assert list(measured["per_class_iou"])[:2] == ["wall", "ground"]
            assert measured["seg_miou"] == pytest.approx(np.nanmean(shapes))
    markdown = (out / "table4.md").read_text()
    for arm in table["arms"]:
        assert ground_tables.ARMS[arm].label in markdown
    assert "64.8 / 0.541 / 33.6" in markdown and "66.4 / 0.473 / 49.6" in markdown  # the paper's, beside
    assert "| scene correspondence R@10% ↑ | scene retrieval mean R ↑ | scene zero-shot top-1 ↑ |" in markdown
    for name in ("table4.png", "figure4.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["tables"]["table4"]["claims"] == table["claims"]
    # every training run ran once, from the baseline tower, and its LLM copy was pruned
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert {p.stem for p in (out / "runs").glob("*.yaml")} <= set(runs)  # each trained run's record beside it
    assert runs == sorted(["baseline-seed0", "baseline-seed1", "random-seed0", "random-seed1"]
                          + [f"{kind}{arm}-seed{s}" for arm in ("cap", "cap_depth", "cap_depth_seg") for s in (0, 1)
                             for kind in ("", "qa-")]
                          + [f"{arm}-seed{s}" for arm in ("depth_only", "seg_only") for s in (0, 1)]  # no QA
                          + [f"qa-{arm}-seed{s}" for arm in ("random", "baseline") for s in (0, 1)])
    assert not list((out / "runs").glob("*/final")) and not list((out / "runs").glob("*/*/trained_parts.safetensors"))
    arm_config = (out / "runs" / "cap_depth-seed1.yaml").read_text()  # from its own seed's baseline
    assert "seed: 1" in arm_config and str(out / "runs" / "baseline-seed1" / "backbone") in arm_config
    assert "- depth" in arm_config and "scene_style: room" in arm_config
    control = (out / "runs" / "seg_only-seed0.yaml").read_text()  # the segmentation probe's control: class masks
    assert "- segmentation" in control and "scene_expressions: classes" in control
    baseline_config = (out / "runs" / "baseline-seed1.yaml").read_text()  # the miniature, continued with the seed
    assert "seed: 1" in baseline_config and f"model_name_or_path: {tiny_miniature}" in baseline_config
    assert f"# starts from tower {ground_runs.tower_digest(tiny_miniature)}" in baseline_config
    assert "depth probe (depth_rmse): depth_only" in (out / "instruments.md").read_text()


@pytest.mark.e2e
def test_a_finished_reproduction_reruns_nothing_and_gives_the_same_numbers(quick, capsys):
    _, argv, first = quick
    capsys.readouterr()
    again = load_recipe("reproduce").main(argv)
    printed = capsys.readouterr().out
    assert "  run " not in printed  # every run and measurement reused
    assert again["arms"] == first["arms"] and again["tables"] == first["tables"]


def test_bad_options_fail_before_anything_trains(tmp_path, tiny_llm):
    base = tiny_run_config(tmp_path, tiny_llm)
    recipe = load_recipe("reproduce")
    common = ["--quick", "--output_dir", str(tmp_path / "out"), "--run_config", str(base)]
    with pytest.raises(ConfigError, match=r"tables: unknown \['table9'\]"):
        recipe.main(common + ["--tables", "table9"])
    with pytest.raises(ConfigError,
                       match=r"run depth_only-seed0: .*unknown key 'max_step' \(did you mean 'max_steps'\?\)"):
        recipe.main(common + ["--post_training", "{max_step: 3}"])
    with pytest.raises(ConfigError, match="scene_style: unknown style 'clutered'"):
        recipe.main(common + ["--scene_style", "clutered"])
    with pytest.raises(ConfigError, match=r"out_of_task: unknown \['translation'\]"):
        recipe.main(common + ["--out_of_task", "translation"])
    assert not (tmp_path / "out" / "runs").exists()


# ---------------------------------------------------------------------------------------- claims, spreads
def _summary(values: dict) -> dict:
    return {arm: {key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "values": v}
                  for key, v in columns.items()} for arm, columns in values.items()}


def test_claims_hold_and_separate_as_the_numbers_say():
    table = ground_tables.TABLES["table4"]
    summary = _summary({
        "random": {"depth_rmse": [3.0, 3.2], "seg_miou": [0.10, 0.12], "qa_accuracy": [0.4, 0.4]},
        "baseline": {"depth_rmse": [2.0, 2.2], "seg_miou": [0.30, 0.32], "qa_accuracy": [0.5, 0.5]},
        "cap": {"depth_rmse": [2.1, 2.3], "seg_miou": [0.29, 0.31], "qa_accuracy": [0.6, 0.7]},
        "cap_depth": {"depth_rmse": [1.5, 1.6], "seg_miou": [0.30, 0.40], "qa_accuracy": [0.6, 0.6]},
        "cap_depth_seg": {"depth_rmse": [1.5, 1.7], "seg_miou": [0.33, 0.37], "qa_accuracy": [0.55, 0.6]},
    })
    checked = ground_report.check_claims(table, summary)
    claims = {c["claim"]: (c["holds"], c["separated"]) for c in checked}
    # (a) random worst everywhere, far from the rest; (b) cap's RMSE 2.2 vs 2.1 and mIoU 0.30 vs 0.31 are no
    # better; (c) 1.55 ± 0.07 vs 2.2 ± 0.14; (d) 0.35 ± 0.028 vs 0.35 ± 0.07: equal means, not better;
    # (e) 0.575 vs 0.65: lower.
    assert claims == {"a": (True, True), "b": (True, False), "c": (True, True), "d": (False, False),
                      "e": (False, False)}
    verdicts = {c["claim"]: c["verdict"] for c in checked}
    assert verdicts["a"] == "holds, the seeds separate"
    assert verdicts["b"] == "holds by the means, within the seeds' spread"
    assert verdicts["d"] == "does not hold, within the seeds' spread"
    # the random tower far better on depth than everything else: against (a), beyond the spread
    summary["random"]["depth_rmse"] = {"mean": 1.0, "std": 0.05, "values": [0.95, 1.05]}
    (claim_a,) = [c for c in ground_report.check_claims(table, summary) if c["claim"] == "a"]
    assert claim_a["verdict"] == "does not hold: contradicted beyond the seeds' spread" and claim_a["contradicted"]


def test_instruments_pass_only_when_their_positive_control_beats_every_negative_beyond_the_spread():
    summary = _summary({
        "random": {"depth_rmse": [3.0, 3.2], "seg_miou": [0.10, 0.12]},
        "depth_only": {"depth_rmse": [2.0, 2.1]},  # apart from random's 3.1 ± 0.14: passes
        "seg_only": {"seg_miou": [0.11, 0.14]},  # better by the mean, within random's spread: fails
        "baseline": {"qa_accuracy": [0.60, 0.62], "qa_grey": [0.40, 0.42]},
    })
    checked = ground_report.check_instruments(summary, {"qa_accuracy": 0.61})  # the floor inside QA's spread
    assert {name: c["passed"] for name, c in checked.items()} == {
        "depth probe": True, "segmentation probe": False, "QA": False}
    assert checked["QA"]["negatives"]["baseline.qa_grey"] == {"mean": pytest.approx(0.41), "std": pytest.approx(
        np.std([0.40, 0.42], ddof=1)), "better": True, "separated": True}
    assert checked["QA"]["negatives"]["majority floor (qa_accuracy)"]["separated"] is False
    assert ground_report.check_instruments(summary, {"qa_accuracy": 0.5})["QA"]["passed"]
    # one seed has no spread: nothing passes, however far apart
    one_seed = ground_report.summarise({"random": [{"depth_rmse": 3.0}], "depth_only": [{"depth_rmse": 1.0}]})
    alone = ground_report.check_instruments(one_seed, {})["depth probe"]
    assert (alone["seeds"], alone["passed"]) == (1, False)
    assert "depth probe (depth_rmse): depth_only 1.000 ± 0.000 against random.depth_rmse 3.000 ± 0.000: **not " \
           "judged: one seed**" in ground_report.instruments_markdown({"depth probe": alone})
    # a control not measured: the instrument has not passed, and says what is missing
    missing = ground_report.check_instruments({"random": summary["random"]}, {})
    assert missing["depth probe"]["missing"] == ["depth_only.depth_rmse"] and not missing["depth probe"]["passed"]
    assert missing["QA"]["missing"] == ["baseline.qa_accuracy", "baseline.qa_grey", "floor.qa_accuracy"]
    text = ground_report.instruments_markdown(checked)
    assert "- depth probe (depth_rmse): depth_only 2.050 ± 0.071 against random.depth_rmse 3.100 ± 0.141: " \
           "**passed**" in text and "segmentation probe (seg_miou): seg_only" in text and "**FAILED**" in text


def test_a_claim_on_a_failed_instrument_gets_no_verdict():
    table = ground_tables.TABLES["table4"]
    summary = _summary({arm: {"depth_rmse": [3.0 - i, 3.1 - i], "seg_miou": [0.1 + i / 10, 0.11 + i / 10],
                              "qa_accuracy": [0.5, 0.5]} for i, arm in enumerate(table.arms)})
    instruments = {"depth probe": {"passed": True}, "segmentation probe": {"passed": False}, "QA": {"passed": False}}
    checked = {c["claim"]: c for c in ground_report.check_claims(table, summary, instruments)}
    assert checked["c"]["verdict"] == "holds, the seeds separate" and checked["c"]["failed_instruments"] == []
    assert checked["a"]["failed_instruments"] == ["segmentation probe"]  # it reads both probes
    assert checked["d"]["verdict"] == ("instrument failed its control (segmentation probe): no verdict (the means: "
                                       "with the claim)")
    assert checked["e"]["failed_instruments"] == ["QA"] and checked["e"]["holds"]
    assert ground_report.check_claims(table, summary)[3]["verdict"] == "holds, the seeds separate"  # unchecked


def test_table5_claims_compare_every_weighting():
    table = ground_tables.TABLES["table5"]
    columns = lambda rmse, miou: {"depth_rmse": rmse, "seg_miou": miou, "qa_accuracy": [0.5, 0.5]}  # noqa: E731
    summary = _summary({
        "baseline": columns([3.0, 3.1], [0.20, 0.21]),
        "lambda_cap": columns([2.0, 2.1], [0.30, 0.31]),
        "lambda_depth": columns([1.5, 1.6], [0.30, 0.32]),
        "lambda_seg": columns([2.0, 2.2], [0.40, 0.41]),
        "cap_depth_seg": columns([2.9, 3.3], [0.35, 0.36]),  # its depth is not better than the baseline's
    })
    verdicts = {c["claim"]: (c["holds"], c["separated"]) for c in ground_report.check_claims(table, summary)}
    assert verdicts == {"a": (False, False), "b": (True, True), "c": (True, True)}


def test_visper_claims_read_higher_accuracy_as_better():
    """The VisPer-LM table's columns are accuracies: VisPer-LM 0.60 / 0.70 against NTP's 0.50 / 0.50 holds claims
    (a) and (b) beyond the spread; the VersaViT tower's 0.40 against 0.50 goes against (c) beyond it."""
    table = ground_tables.TABLES["visper"]
    summary = _summary({
        "visper_ntp": {"spatial_qa": [0.50, 0.51], "spatial_depth": [0.50, 0.52]},
        "visper": {"spatial_qa": [0.60, 0.61], "spatial_depth": [0.70, 0.72]},
        "visper_versavit": {"spatial_qa": [0.40, 0.41], "spatial_depth": [0.50, 0.52]},
    })
    checked = {c["claim"]: c for c in ground_report.check_claims(table, summary)}
    assert {k: (c["holds"], c["separated"], c["contradicted"]) for k, c in checked.items()} == {
        "a": (True, True, False), "b": (True, True, False), "c": (False, True, True)}


def test_sailvit_claims_read_each_column_in_its_direction():
    """QA accuracy and mIoU: higher is better; depth RMSE: lower is better."""
    table = ground_tables.TABLES["sailvit"]
    columns = lambda qa, rmse, miou: {"qa_accuracy": qa, "depth_rmse": rmse, "seg_miou": miou}  # noqa: E731
    summary = _summary({
        "baseline": columns([0.50, 0.51], [3.0, 3.1], [0.20, 0.21]),
        "cap": columns([0.55, 0.56], [3.0, 3.1], [0.20, 0.21]),
        "cap_depth_seg": columns([0.55, 0.56], [2.0, 2.1], [0.40, 0.41]),  # lower RMSE, higher mIoU than SAILViT
        "sailvit": columns([0.60, 0.61], [2.9, 3.0], [0.25, 0.26]),
    })
    verdicts = {c["claim"]: (c["holds"], c["separated"]) for c in ground_report.check_claims(table, summary)}
    assert verdicts == {"a": (True, True), "b": (True, True), "c": (True, True), "d": (True, True)}
    summary["sailvit"]["depth_rmse"] = {"mean": 1.0, "std": 0.05, "values": [0.95, 1.05]}  # SAILViT's depth now best
    (claim_c,) = [c for c in ground_report.check_claims(table, summary) if c["claim"] == "c"]
    assert claim_c["contradicted"] and not claim_c["holds"]


def test_every_column_s_direction_agrees_with_its_arrow():
    columns = ground_tables.COLUMNS + ground_tables.EXTRA_COLUMNS + ground_tables.SPATIAL_COLUMNS
    assert {key: higher for key, _, higher in columns} == {key: label.endswith("↑") for key, label, _ in columns}
    assert all(label.endswith(("↑", "↓")) for _, label, _ in columns)
    assert {"spatial_qa", "spatial_depth", "spatial_relation", "spatial_count", "depth_rmse", "object_rmse"} <= {
        key for key, _, _ in columns}
    assert (
        not ground_report._higher("depth_rmse")
        and not ground_report._higher("object_rmse")
        and ground_report._higher("spatial_depth")
    )


def test_spread_is_the_mean_and_sample_standard_deviation():
    values = [0.2, 0.5, 0.11]
    mean, std = ground_report.spread(values)
    assert mean == pytest.approx(sum(values) / 3)
    assert std == pytest.approx((sum((v - mean) ** 2 for v in values) / 2) ** 0.5)
    assert ground_report.spread([0.4]) == (0.4, 0.0)


def test_tables_name_registered_arms_and_new_tables_register_the_same_way():
    with pytest.raises(ValueError, match=r"Table mine: unknown arms \['nope'\]"):
        ground_tables.register_table(ground_tables.Table("mine", "mine", ("baseline", "nope")))
    with pytest.raises(ValueError, match="Arm.kind: expected random, baseline, post or mllm, got 'fresh'"):
        ground_tables.register_arm(ground_tables.Arm("x", "x", "fresh"))
    assert set(ground_tables.TABLES["table5"].arms) <= set(ground_tables.ARMS)


# -------------------------------------------------------------------------------------------------- QA
def test_normalize_answer_drops_case_punctuation_and_articles():
    assert normalize_answer("Two.") == normalize_answer(" two") == "two"
    assert normalize_answer("The  RED box!") == "red box"
    assert normalize_answer("no") != normalize_answer("one")


class _Tokenizer:
    def __init__(self, vocabulary):
        self.vocabulary = vocabulary

    def batch_decode(self, tokens, skip_special_tokens=True):
        return [" ".join(self.vocabulary[t] for t in row) for row in tokens.tolist()]


class _Processor:
    """Prompts pass through as the image's index: the stub model answers per image."""

    pad_token_id = 0

    def __init__(self, vocabulary):
        self.tokenizer = _Tokenizer(vocabulary)

    def __call__(self, images, prompts):
        import torch

        return {"image_ids": torch.tensor([int(image[0, 0, 0]) for image in images])}


class _Model:
    training = False

    def __init__(self, answers):
        self.answers = answers

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, image_ids, **kwargs):
        import torch

        return torch.tensor([[self.answers[int(i)]] for i in image_ids])


def test_qa_accuracy_is_exact_match_after_normalisation_per_question_kind():
    vocabulary = ["<pad>", "Two.", "yes", "red", "one"]
    images = [np.full((4, 4, 3), index, np.uint8) for index in range(4)]
    items = [QAItem(images[0], "How many boxes are there?", "two"), QAItem(images[1], "Is there anything red?", "yes"),
             QAItem(images[2], "What color is the cone?", "blue"), QAItem(images[3], "How many cones are there?", "no")]
    said = {0: 1, 1: 2, 2: 3, 3: 4}  # "Two." (right), "yes" (right), "red" (wrong), "one" (wrong)
    result = qa_accuracy(_Model(said), _Processor(vocabulary), items, batch_size=3)
    assert result["accuracy"] == 0.5 and result["count"] == 4
    assert result["per_kind"] == {"How many": 0.5, "Is there anything": 1.0, "What color is": 0.0}
    assert [a["said"] for a in result["answers"]] == ["Two.", "yes", "red", "one"]
    with pytest.raises(ValueError, match="no questions"):
        qa_accuracy(_Model(said), _Processor(vocabulary), [])


def test_majority_accuracy_answers_each_kind_with_its_most_frequent_training_answer():
    image = np.zeros((2, 2, 3), np.uint8)
    train = [QAItem(image, "How many boxes are there?", "one"), QAItem(image, "How many cones are there?", "one"),
             QAItem(image, "How many spheres are there?", "two"), QAItem(image, "Is there anything red?", "no")]
    held_out = [QAItem(image, "How many cylinders are there?", "One"), QAItem(image, "Is there anything blue?", "yes"),
                QAItem(image, "What color is the box?", "red")]  # a kind never seen in training: wrong
    assert majority_accuracy(train, held_out) == pytest.approx(1 / 3)


def test_grey_questions_keep_the_questions_and_replace_every_image_with_grey():
    from versavit_trainer.evaluation.ground_measures import grey_questions

    items = [QAItem(np.full((4, 6, 3), 7, np.uint8), "How many boxes are there?", "two")]
    (grey,) = grey_questions(items)
    assert (grey.question, grey.answer) == (items[0].question, items[0].answer)
    assert grey.image.shape == (4, 6, 3) and grey.image.dtype == np.uint8 and (grey.image == 128).all()
    assert (items[0].image == 7).all()


def test_cluttered_probe_sources_have_the_cone_class():
    from versavit_trainer.data import readers

    source = readers.scene_segmentation(3, 9000, style="cluttered")
    assert source.class_names == ("sky", "ground", "sphere", "box", "cylinder", "cone")
    assert source.num_classes == 6 and source.load(0)[0].size == (192, 144)
    assert readers.scene_segmentation(2).class_names == readers.SCENE_CLASSES
    assert readers.scene_segmentation(1, style="room").class_names[:2] == ("wall", "ground")
    assert readers.scene_depth(1, style="room").max_depth == 10.0 and readers.scene_depth(1).max_depth == 30.0


@pytest.mark.e2e
def test_a_tower_retrained_at_the_same_path_is_measured_again(quick, capsys):
    """Caches key on the tower's weights, not its path: a changed baseline re-runs the arms from it, and every
    tower's probes and QA protocol are measured again."""
    folder, argv, first = quick
    baseline = folder / "out" / "runs" / "baseline-seed0" / "backbone"
    from safetensors.torch import load_file, save_file

    weights = load_file(baseline / "model.safetensors")
    original = {k: v.clone() for k, v in weights.items()}
    key = sorted(weights)[0]
    weights[key] += 0.5
    save_file(weights, baseline / "model.safetensors", metadata={"format": "pt"})
    try:
        capsys.readouterr()
        load_recipe("reproduce").main(argv)
        printed = capsys.readouterr().out
        assert "run cap-seed0 ..." in printed and "run qa-baseline-seed0 ..." in printed
        assert "run baseline-seed0 ..." not in printed and "run qa-random-seed0 ..." not in printed
        assert "run cap-seed1 ..." not in printed  # seed 1's arms start from their own baseline
    finally:
        save_file(original, baseline / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.e2e
def test_quick_table6_builds_one_baseline_per_tower_and_post_trains_each_from_its_own(tmp_path, tiny_llm,
                                                                                     tiny_miniature):
    """Table 6 on three tiny towers of other families: one caption-trained baseline per tower, each arm post-trained
    from its own tower's baseline (with that tower's sizes), every tower measured; the claims compare each tower's
    VersaViT arm with its own baseline."""
    from conftest import QWEN3VL_VISION, QWEN25_VISION, SIGLIP_VISION

    base = tiny_run_config(tmp_path, tiny_llm, save_strategy="no", report_to="none", panel_samples=0)
    sixteen = {"depth_size": 64, "segmentation_size": 64, "caption_max_pixels": 64 * 64}  # whole 32-px blocks
    from_random = {"baseline": {"model_name_or_path": None}}  # not from the run config's miniature
    towers = {"qwen2_5_vl": {"vision_config": QWEN25_VISION, **from_random},
              "qwen3_vl": {"vision_config": QWEN3VL_VISION, **sixteen, **from_random},
              "siglip2": {"vision_config": SIGLIP_VISION, **sixteen, **from_random}}
    out = tmp_path / "out"
    results = load_recipe("reproduce").main([
        "--quick", "--tables", "table6", "--seeds", "0", "--output_dir", str(out), "--run_config", str(base),
        "--probe_size", "224", "--towers", json.dumps(towers)]  # every out-of-task column, on every family
        + tiny_baseline(tiny_miniature))
    table = results["tables"]["table6"]
    assert table["arms"] == [f"{kind}_{tower}" for tower in towers for kind in ("baseline", "versavit")]
    assert [c["claim"] for c in table["claims"]] == [f"{t}-{c}" for t in towers for c in ("depth_rmse", "seg_miou")]
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert {p.stem for p in (out / "runs").glob("*.yaml")} <= set(runs)  # each trained run's record beside it
    controls = ["baseline-seed0", "random-seed0", "depth_only-seed0", "seg_only-seed0", "qa-random-seed0",
                "qa-baseline-seed0"]  # the instruments' controls, on the run config's tower
    assert runs == sorted([f"baseline-{t}-seed0" for t in towers] + [f"versavit_{t}-seed0" for t in towers]
                          + [f"qa-{kind}_{t}-seed0" for t in towers for kind in ("baseline", "versavit")] + controls)
    for tower, options in towers.items():
        backbone = json.loads((out / "runs" / f"versavit_{tower}-seed0" / "backbone" / "config.json").read_text())
        assert backbone["vision_config"]["model_type"] == options["vision_config"]["model_type"]
        arm_config = (out / "runs" / f"versavit_{tower}-seed0.yaml").read_text()
        assert str(out / "runs" / f"baseline-{tower}-seed0" / "backbone") in arm_config
        assert "vision_config" not in arm_config
        for kind in ("baseline", "versavit"):
            measured = json.loads((out / "measurements" / f"{kind}_{tower}-seed0.json").read_text())
            assert all(np.isfinite(measured[key]) for key in ("qa_accuracy", "depth_rmse", "seg_miou",
                                                              "correspondence", "retrieval", "classification"))
    assert "64 / 0.533 / 37.2" in (out / "table6.md").read_text()  # the paper's Qwen2.5-VL row, beside


def test_table6_needs_every_tower_it_names(tmp_path, tiny_llm):
    base = tiny_run_config(tmp_path, tiny_llm)
    common = ["--quick", "--output_dir", str(tmp_path / "out"), "--run_config", str(base), "--tables", "table6"]
    with pytest.raises(ConfigError, match=r"towers.qwen2_5_vl: table6's arm baseline_qwen2_5_vl needs"):
        load_recipe("reproduce").main(common + ["--towers", "{}"])
    with pytest.raises(ConfigError, match=r"towers.qwen2_5_vl.baseline: expected a mapping .*, got 'random'"):
        load_recipe("reproduce").main(common + ["--towers", json.dumps(
            {name: {"vision_config": {}, "baseline": "random"} for name in ("qwen2_5_vl", "qwen3_vl", "siglip2")})])
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.e2e
def test_quick_sailvit_table_runs_the_method_s_stages_from_the_same_baseline(tmp_path, tiny_llm, tiny_miniature):
    """The SAILViT comparison: its arm runs the three stages of sailvit_default.yaml (each on --quick's scenes of its
    own seeds and texts) from the same baseline tower as the VersaViT arms, and is measured like them."""
    import yaml

    base = tiny_run_config(tmp_path, tiny_llm, save_strategy="no", report_to="none", panel_samples=0)
    out = tmp_path / "out"
    results = load_recipe("reproduce").main(["--quick", "--tables", "sailvit", "--seeds", "0", "--output_dir",
                                             str(out), "--run_config", str(base), "--probe_size", "56"]
                                            + tiny_baseline(tiny_miniature))
    table = results["tables"]["sailvit"]
    assert table["arms"] == ["baseline", "cap", "cap_depth_seg", "sailvit"]
    assert [c["claim"] for c in table["claims"]] == ["a", "b", "c", "d"]
    config = yaml.safe_load((out / "runs" / "sailvit-seed0.yaml").read_text())
    assert config["model_name_or_path"] == str(out / "runs" / "baseline-seed0" / "backbone")
    assert [stage["name"] for stage in config["stages"]] == ["coarse_alignment", "fine_alignment", "knowledge"]
    assert [stage["objectives"]["captioning"]["data"] for stage in config["stages"]] == [
        {"num_scenes": ground_runs.QUICK_RUN["num_scenes"], "scene_seed": seed, "texts": texts}
        for seed, texts in ((0, "short"), (200000, "detailed"), (400000, "instructions"))]
    for stage in ("coarse_alignment", "fine_alignment", "knowledge"):
        assert json.loads((out / "runs" / "sailvit-seed0" / stage / "stage.json").read_text())["steps"] == 1
    measured = json.loads((out / "measurements" / "sailvit-seed0.json").read_text())
    assert all(np.isfinite(measured[key]) for key in ("qa_accuracy", "depth_rmse", "seg_miou"))
    assert ground_tables.ARMS["sailvit"].label in (out / "sailvit.md").read_text()


@pytest.mark.e2e
def test_quick_visper_table_builds_three_mllms_from_the_same_baseline(tmp_path, tiny_llm, tiny_miniature):
    """The VisPer-LM table: NTP only and VisPer-LM around the baseline tower (VisPer-LM's experts: the same seed's
    VersaViT run's dense heads), NTP around the VersaViT tower; each scored on held-out spatial questions, the first
    seed's NTP and VisPer-LM LLMs probed layer by layer."""
    import yaml

    base = tiny_run_config(tmp_path, tiny_llm, save_strategy="no", report_to="none", panel_samples=0)
    experts = {name: {"output": output, "llm_layers": [1], "queries": 4, "grid": 2, "size": 56}
               for name, output in (("depth", "hidden_states"), ("segmentation", "segmentation_embeddings"))}
    out = tmp_path / "out"
    results = load_recipe("reproduce").main([
        "--quick", "--tables", "visper", "--seeds", "0", "--output_dir", str(out), "--run_config", str(base),
        "--visper", json.dumps({"distillation_experts": experts, "distillation_num_task_tokens": 2})]
        + tiny_baseline(tiny_miniature))
    table = results["tables"]["visper"]
    assert table["arms"] == ["visper_ntp", "visper", "visper_versavit"]
    runs = out / "runs"
    configs = {arm: yaml.safe_load((runs / f"{arm}-seed0.yaml").read_text()) for arm in table["arms"]}
    assert configs["visper_ntp"]["model_name_or_path"] == configs["visper"]["model_name_or_path"] == \
        str(runs / "baseline-seed0" / "backbone")
    assert configs["visper_versavit"]["model_name_or_path"] == str(runs / "cap_depth_seg-seed0" / "backbone")
    assert {e["model"] for e in configs["visper"]["distillation_experts"].values()} == {
        str(runs / "cap_depth_seg-seed0" / "dense")}
    assert list(configs["visper"]["stages"][0]["objectives"]) == ["distillation"]
    assert list(configs["visper_ntp"]["stages"][0]["objectives"]) == ["captioning"]
    assert all(c["stages"][1]["objectives"]["captioning"]["data"]["texts"] == "spatial" for c in configs.values())
    for arm in table["arms"]:
        assert 0 <= results["arms"][arm]["spatial_qa"]["mean"] <= 1
    assert set(results["majority_spatial_accuracy"]) >= {"spatial_qa", "spatial_depth"}
    assert (out / "visper_layer_probes.png").is_file() and ground_tables.ARMS["visper"].label in (
        out / "visper.md"
    ).read_text()
