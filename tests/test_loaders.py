"""Real-benchmark loaders: Fine-tune-CoT preprocessing, official splits, val carving, n-shot, hub, errors.

Fixture tests (always run) use tests/fixtures/data, synthetic rows in the layout of ../shared/data. Tests
marked `shared` read the real files in ../shared/data and skip when it is absent.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sgft_lab.benchmarks import load_benchmark
from sgft_lab.benchmarks.loaders import KNOWN, MissingTrainData, carve, default_config, load_pools, load_real
from sgft_lab.config import BenchmarkConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
requires_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} (../shared beside the repo) is absent"
)


def cfg_for(key: str, **kw) -> BenchmarkConfig:
    return dataclasses.replace(default_config(key), **kw)


def ids(examples) -> list[int]:
    return [int(e.id.split(":")[1]) for e in examples]


def copy_fixtures(tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(FIXTURES, dst)
    return dst


# --- fixtures: rendering ------------------------------------------------------------------------------------


def test_every_benchmark_loads_from_fixtures():
    for key in KNOWN:
        pools = load_pools(default_config(key), FIXTURES, require_train=False)
        s = carve(pools, default_config(key))
        assert s.task == key
        assert s.test, key
        assert all(e.id.startswith(f"{key}:") and e.question == e.question.strip() for e in s.train + s.test)


def test_fixture_rendering_rules():
    def ex(key, i, **kw):
        return load_pools(cfg_for(key, **kw), FIXTURES, require_train=False).examples[i]

    e = ex("gsm8k", 1)
    assert (e.answer, e.answer_type) == ("1,000", "number")  # commas kept, as stored by Fine-tune-CoT
    assert e.rationale == "It makes 250 * 4 = <<250*4=1000>>1000 dollars."
    assert ex("gsm8k", 3).id == "gsm8k:3"  # test rows follow the 3 train rows
    assert ex("single_eq", 1).answer == "0.75" and ex("single_eq", 0).answer == "7.0"
    assert ex("addsub", 0).answer == "14"  # AddSub stores strings: str() keeps them
    assert ex("multiarith", 0).question.startswith("Ivy had") and ex("multiarith", 0).answer == "20"
    assert ex("svamp", 0).question == "Pam has 14 shells. She finds 6 more How many shells does she have now?"
    assert ex("svamp", 0).answer == "20.0"
    e = ex("commonsense_qa", 2)
    assert e.question == (
        "Where do fish live? Answer choices: (A) tree, (B) sky, (C) road, (D) house, (E) water."
    )
    assert (e.answer, e.choices[-1]) == ("E", "water")
    e = ex("strategy_qa", 1)
    assert (e.question, e.answer, e.answer_type) == ("Is ice colder than boiling water?", "Yes", "yes_no")
    assert e.rationale == "Ice is at most 0 C.  Boiling water is 100 C."
    e = ex(
        "tracking_shuffled_objects", 1
    )  # input's trailing spaces kept before the suffix (see preprocess.py)
    assert e.question.endswith(
        "Bob has  \nWhich choice is true? Answer choices: (A) Ulysses, (B) Emma, (C) Dune."
    )
    assert e.answer == "C"
    assert ex("coin_flip", 0).answer == "no" and ex("last_letter_concatenation", 0).answer == "anyt"
    assert ex("mawps", 2).question == "There are 4 rows of 6 seats and 7 is not used . How many seats ?"
    assert ex("mawps", 1).answer == "2.0"


def test_fixture_aqua_test_only_and_choice_suffix():
    pools = load_pools(default_config("aqua"), FIXTURES, require_train=False)
    assert pools.missing_train and "aqua/train.json" in pools.missing_train and pools.n_split_train == 3
    e = pools.examples[97467]
    assert e.question == (
        "A train covers 120 km in 2 hours. What is its speed? Answer choices: (A) 40 km/h, "
        "(B) 50 km/h, (C) 60 km/h, (D) 70 km/h, (E) 80 km/h."
    )
    assert (e.answer, e.choices[4], e.rationale) == ("C", "80 km/h", "Speed = 120 / 2 = 60 km/h.\nANSWER:C")
    with pytest.raises(MissingTrainData, match=r"aqua/train\.json.*github\.com/deepmind/AQuA"):
        load_real(default_config("aqua"), FIXTURES)
    with pytest.raises(MissingTrainData, match=r"aqua/train\.json"):
        load_benchmark(default_config("aqua"), str(FIXTURES))


def test_fixture_aqua_with_train_file(tmp_path):
    data = copy_fixtures(tmp_path)
    rows = [
        {
            "question": f"What is {i} + 1?",
            "options": [f"{c}){i + k}" for k, c in enumerate("ABCDE")],
            "rationale": f"{i} + 1 = {i + 1}",
            "correct": "B",
        }
        for i in range(4)
    ]
    (data / "aqua" / "train.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "fine_tune_cot_splits/split/aqua__default.json").write_text(
        json.dumps({"train": [0, 2, 3], "test": [4, 5]})
    )
    s = load_real(cfg_for("aqua", val_fraction=0.0), data)
    assert ids(s.train) == [0, 2, 3] and ids(s.test) == [4, 5]  # test indices follow the train file's rows
    assert s.train[0].answer == "B" and s.train[0].question.endswith("(E) 4.")


def test_date_shuffle_fixture():
    """Choice j goes to position perm[j] of RandomState(0).permutation, one draw per row in file order:
    row 0 draws [2, 3, 1, 0], row 1 [0, 2, 1] (worked out by hand from numpy's stream)."""
    pools = load_pools(default_config("date_understanding"), FIXTURES)
    e0, e1 = pools.examples[0], pools.examples[1]
    assert e0.question == (
        "Today is Jan 1, 2020. What is the date tomorrow in MM/DD/YYYY?\nWhich choice is true? "
        "Answer choices: (A) 07/08/2020, (B) 05/06/2020, (C) 01/02/2020, (D) 03/04/2020."
    )
    assert e0.answer == "C" and e0.choices == ["07/08/2020", "05/06/2020", "01/02/2020", "03/04/2020"]
    assert e1.question.endswith("(A) 02/03/2021, (B) 03/02/2021, (C) 02/02/2021.") and e1.answer == "C"
    # The same rendering whatever the split (the stream runs over the whole file, not the split's rows).
    other = load_pools(cfg_for("date_understanding", split="fine_tune_cot_template"), FIXTURES)
    assert [other.examples[i].question for i in range(3)] == [pools.examples[i].question for i in range(3)]


def test_asdiv_answers_and_skips():
    pools = load_pools(default_config("asdiv"), FIXTURES)
    assert sorted(pools.examples) == [0, 2, 3, 4]  # "Ben" is not a number: skipped, ids keep file positions
    assert [pools.examples[i].answer for i in (0, 2, 3)] == ["9", "2.5", "50"]
    assert pools.examples[0].question == (
        "Seven cats and two dogs are in the yard. How many animals are in the yard?"
    )
    assert any("1 of 5 problems skipped" in n for n in pools.notes)


# --- fixtures: splits ---------------------------------------------------------------------------------------


def test_fine_tune_cot_split_follows_the_index_files():
    s = load_real(cfg_for("gsm8k", val_fraction=0.0), FIXTURES)
    assert ids(s.train) == [0, 1, 2] and ids(s.test) == [3, 4] and s.val == []
    t = load_real(cfg_for("multiarith", split="fine_tune_cot_template", val_fraction=0.0), FIXTURES)
    assert ids(t.train) == [0, 1] and ids(t.test) == [2, 3]
    with pytest.raises(ValueError, match="no template split; only multiarith, date_understanding"):
        load_real(cfg_for("gsm8k", split="fine_tune_cot_template"), FIXTURES)
    with pytest.raises(ValueError, match="asdiv has no Fine-tune-CoT split"):
        load_real(cfg_for("asdiv", split="fine_tune_cot"), FIXTURES)


def test_val_carving_and_n_shot_are_seeded_and_disjoint():
    base = cfg_for("commonsense_qa", val_fraction=0.34)
    a, b = load_real(base, FIXTURES), load_real(base, FIXTURES)
    assert (ids(a.train), ids(a.val)) == (ids(b.train), ids(b.val))
    assert len(a.val) == 1 and len(a.train) == 2 and ids(a.test) == [3, 4]
    assert sorted(ids(a.train) + ids(a.val)) == [0, 1, 2]  # val comes out of train; test untouched
    seeds = {tuple(ids(load_real(dataclasses.replace(base, data_seed=k), FIXTURES).val)) for k in range(8)}
    assert len(seeds) > 1  # the seed matters
    # n-shot: Fine-tune-CoT's subsample_indices over the whole official train split (the same subset under
    # both protocols); the clean protocol's validation questions then come from the rest
    official = sorted(np.random.RandomState(0).permutation([0, 1, 2])[:2].tolist())
    two = load_real(dataclasses.replace(base, n_shot=2), FIXTURES)
    assert ids(two.train) == official and len(two.val) == 1 and not set(ids(two.val)) & set(official)
    paper = load_real(dataclasses.replace(base, n_shot=2), FIXTURES, protocol="paper")
    assert ids(paper.train) == official and paper.val == [] and ids(paper.test) == [3, 4]
    assert ids(load_real(base, FIXTURES, protocol="paper").train) == [0, 1, 2]  # paper: all of train
    with pytest.raises(ValueError, match="n_shot=5 exceeds the 3 training questions"):
        load_real(dataclasses.replace(base, n_shot=5), FIXTURES)


def test_random_split_for_any_task():
    s = load_real(cfg_for("mawps", val_fraction=0.0), FIXTURES)
    assert len(s.train) == 4 and len(s.test) == 1  # round(5 * 0.7) = 4
    assert not set(ids(s.train)) & set(ids(s.test))
    r = load_real(cfg_for("coin_flip", split="random", train_fraction=0.5, val_fraction=0.0), FIXTURES)
    assert len(r.train) + len(r.test) == 3 and len(r.train) == 2  # round(1.5) = 2 (Python rounding)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SGFT_LAB_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # neither ./data nor ../shared/data here
    with pytest.raises(ValueError, match="needs a data dir.*SGFT_LAB_DATA_DIR"):
        load_real(default_config("coin_flip"))
    monkeypatch.setenv("SGFT_LAB_DATA_DIR", str(FIXTURES))
    assert load_real(default_config("coin_flip")).counts()["test"] == 1
    assert load_real(cfg_for("coin_flip", data_dir=str(FIXTURES)), None).counts()["test"] == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_real(default_config("coin_flip"), "/nonexistent/dir")


def test_unknown_benchmark_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown benchmark 'nope'.*known: single_eq, addsub"):
        load_real(cfg_for("gsm8k", name="nope", task="nope"), FIXTURES)


def test_benchmark_configs_compose_and_match_the_registry():
    """conf/benchmark/<key>.yaml composes through Hydra, validates against BenchmarkConfig and agrees with
    default_config (what the describe CLI falls back to without conf/)."""
    from conftest import compose

    from sgft_lab.config import validate

    for key in KNOWN:
        b = validate(compose([f"benchmark={key}"])).benchmark
        assert b == default_config(key), key


# --- fixtures: bad input ------------------------------------------------------------------------------------


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    data = copy_fixtures(tmp_path)
    path = data / "gsm8k" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-5]  # truncated JSON on line 2
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as e:
        load_real(default_config("gsm8k"), data)
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: invalid JSON") and "\n" not in msg


@pytest.mark.parametrize(
    "rel,edit,expected",
    [
        (
            "gsm8k/test.jsonl",
            lambda rows: rows[1].pop("answer"),
            r"gsm8k/test\.jsonl:2: field 'answer': missing",
        ),
        (
            "singleeq/questions.json",
            lambda rows: rows[2].pop("sQuestion"),
            r"singleeq/questions\.json row 2: field 'sQuestion': missing",
        ),
        (
            "commonsenseqa/dev_rand_split.jsonl",
            lambda rows: rows[0]["question"].pop("stem"),
            r"dev_rand_split\.jsonl:1: field 'question\.stem': missing",
        ),
        (
            "strategyqa/task.json",
            lambda rows: rows["examples"][1].update(target="Maybe."),
            r"strategyqa/task\.json row 1: field 'target'",
        ),
    ],
)
def test_missing_field_names_file_row_and_field(tmp_path, rel, edit, expected):
    data = copy_fixtures(tmp_path)
    path = data / rel
    if path.suffix == ".jsonl":
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        edit(rows)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        rows = json.loads(path.read_text())
        edit(rows)
        path.write_text(json.dumps(rows, indent=1))
    key = {
        "gsm8k": "gsm8k",
        "singleeq": "single_eq",
        "commonsenseqa": "commonsense_qa",
        "strategyqa": "strategy_qa",
    }[rel.split("/")[0]]
    with pytest.raises(ValueError, match=expected) as e:
        load_real(default_config(key), data)
    assert "\n" not in str(e.value)


def test_csv_missing_cell_names_line(tmp_path):
    data = copy_fixtures(tmp_path)
    path = data / "mawps/cv_mawps/fold0/dev.csv"
    lines = path.read_text().splitlines()
    lines[2] = "Each box has number0 pens .,12.0"  # row cut short: no Answer
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"fold0/dev\.csv:3: field 'Answer': missing"):
        load_real(default_config("mawps"), data)


def test_split_index_without_row_is_an_error(tmp_path):
    data = copy_fixtures(tmp_path)
    (data / "fine_tune_cot_splits/split/coin_flip__default.json").write_text('{"train": [0, 1], "test": [7]}')
    with pytest.raises(ValueError, match=r"coin_flip__default\.json: field 'test': index 7 .* no row"):
        load_real(default_config("coin_flip"), data)


# --- the hub path, on local files in the hub's format -------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_hub_source_through_load_dataset_json(tmp_path):
    pytest.importorskip("datasets")
    # openai/gsm8k rows ({question, answer}) for train and test: 3 + 2, so the fixture split file applies.
    train = [{"question": f"Hub q{i}?", "answer": f"Step {i}.\n#### {i},000"} for i in range(3)]
    test = [{"question": "Hub t0?", "answer": "x\n#### 5"}, {"question": "Hub t1?", "answer": "y\n#### 6"}]
    files = {
        "train": _write_jsonl(tmp_path / "train.jsonl", train),
        "test": _write_jsonl(tmp_path / "test.jsonl", test),
    }
    cfg = cfg_for(
        "gsm8k",
        source="hub",
        hub_id="json",
        hub_config=None,
        val_fraction=0.0,
        hub_cache_dir=str(tmp_path / "cache"),
    )
    s = load_real(cfg, FIXTURES, data_files=files)  # fine_tune_cot split: index files from the data dir
    assert ids(s.train) == [0, 1, 2] and ids(s.test) == [3, 4]
    assert (s.train[1].question, s.train[1].answer, s.train[1].rationale) == ("Hub q1?", "1,000", "Step 1.")
    assert s.test[0].answer == "5"

    # tau/commonsense_qa rows (question a string, choices {label, text}) through the same path, random split.
    csqa = [
        {
            "id": f"h{i}",
            "question": f"Pick {i}?",
            "question_concept": "c",
            "answerKey": "D",
            "choices": {"label": list("ABCDE"), "text": ["a", "b", "c", f"d{i}", "e"]},
        }
        for i in range(4)
    ]
    files = {"train": _write_jsonl(tmp_path / "csqa.jsonl", csqa)}
    cfg = cfg_for(
        "commonsense_qa",
        source="hub",
        hub_id="json",
        hub_config=None,
        split="random",
        val_fraction=0.0,
        hub_cache_dir=str(tmp_path / "cache"),
        hub_splits=["train"],
    )
    s = load_real(cfg, None, data_files=files)  # random split: no data dir needed
    e = min(s.train + s.test, key=lambda x: x.id)
    assert e.question == "Pick 0? Answer choices: (A) a, (B) b, (C) c, (D) d0, (E) e." and e.answer == "D"


def test_hub_refuses_official_split_when_row_order_is_unknown():
    cfg = cfg_for("svamp", source="hub")
    with pytest.raises(ValueError, match="split indices cannot be applied"):
        load_real(cfg, FIXTURES)
    with pytest.raises(ValueError, match="no hub dataset is known for coin_flip"):
        load_real(cfg_for("coin_flip", source="hub", split="random"), None)


# --- the real files in ../shared/data -----------------------------------------------------------------------

OFFICIAL = {  # methods.md 2.7: (train, test); template splits separately
    "single_eq": (356, 152),
    "addsub": (276, 119),
    "multiarith": (420, 180),
    "gsm8k": (7473, 1319),
    "aqua": (10000, 254),
    "svamp": (700, 300),
    "date_understanding": (258, 111),
    "tracking_shuffled_objects": (525, 225),
    "last_letter_concatenation": (350, 150),
    "coin_flip": (350, 150),
    "commonsense_qa": (9741, 1221),
    "strategy_qa": (1603, 687),
}
FIRST = {  # sample index 0 of each task (question start, gold), from the raw files
    "single_eq": ("Joan found 70 seashells on the beach. she gave Sam some", "43.0"),
    "addsub": ("Joan found 70 seashells on the beach . she gave Sam some", "43"),
    "multiarith": ("For Halloween Debby and her sister combined the candy", "39"),
    "gsm8k": ("Natalia sold clips to 48 of her friends in April", "72"),
    "svamp": (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack How much",
        "51.0",
    ),
    "date_understanding": (
        "Yesterday was April 30, 2021. What is the date today in MM/DD/YYYY?\nWhich choice",
        "F",
    ),
    "tracking_shuffled_objects": ("Alice, Bob, and Claire are playing a game. At the start of the game", "C"),
    "last_letter_concatenation": ('Take the last letters of each words in "Whitney Erika Tj Benito"', "yajo"),
    "coin_flip": ("A coin is heads up. Whitney flips the coin. Erika does not flip the coin.", "yes"),
    "commonsense_qa": (
        "The sanctions against the school were a punishing blow, and they seemed to what",
        "A",
    ),
    "strategy_qa": ("Is it common to see frost during some college commencements?", "Yes"),
}


@pytest.mark.shared
@requires_shared
@pytest.mark.parametrize("key", list(OFFICIAL))
def test_shared_official_counts_first_example_and_disjointness(key):
    pools = load_pools(default_config(key), SHARED_DATA, require_train=False)
    assert (pools.n_split_train, len(pools.test)) == OFFICIAL[key]
    assert not set(pools.train) & set(pools.test)
    s = carve(pools, default_config(key))
    assert len(s.test) == OFFICIAL[key][1]
    if key != "aqua":
        assert len(s.train) + len(s.val) == OFFICIAL[key][0] and len(s.val) == round(OFFICIAL[key][0] * 0.1)
        assert not set(ids(s.train)) & set(ids(s.val)) and not set(ids(s.train + s.val)) & set(ids(s.test))
        start, gold = FIRST[key]
        e = pools.examples[0]
        assert e.id == f"{key}:0" and e.question.startswith(start) and e.answer == gold


@pytest.mark.shared
@requires_shared
def test_shared_template_splits_and_aqua():
    t = load_pools(cfg_for("multiarith", split="fine_tune_cot_template"), SHARED_DATA)
    assert (len(t.train), len(t.test)) == (413, 187)
    t = load_pools(cfg_for("date_understanding", split="fine_tune_cot_template"), SHARED_DATA)
    assert (len(t.train), len(t.test)) == (261, 108)
    aqua = load_pools(default_config("aqua"), SHARED_DATA, require_train=False)
    assert min(aqua.test) == 97467 and max(aqua.test) == 97720 and aqua.train == []
    e = aqua.examples[97467]
    assert (
        e.question.endswith(
            "Answer choices: (A) 5(√3 + 1), (B) 6(√3 + √2), (C) 7(√3 – 1), (D) 8(√3 – 2), (E) None of these."
        )
        and e.answer == "A"
        and e.rationale.startswith("Explanation")
    )
    with pytest.raises(MissingTrainData, match=r"aqua/train\.json"):
        load_real(default_config("aqua"), SHARED_DATA)
    g = load_pools(default_config("gsm8k"), SHARED_DATA).examples
    assert g[7473].question.startswith("Janet’s ducks lay 16 eggs") and g[7473].answer == "18"
    assert "<<16-3-4=9>>" in g[7473].rationale and "####" not in g[7473].rationale


@pytest.mark.shared
@requires_shared
def test_shared_date_shuffle_matches_fine_tune_cot_dataset():
    """Rows 0 and 368 (the last) as in reasoning-teacher@5a5104a dataset/date_understanding*.json: the
    RandomState(0) stream stays in step over the whole file."""
    ex = load_pools(default_config("date_understanding"), SHARED_DATA).examples
    assert (
        ex[0].question.endswith(
            "Answer choices: (A) 06/12/2021, (B) 03/11/2021, (C) 02/23/2021, "
            "(D) 05/09/2021, (E) 04/29/2021, (F) 05/01/2021."
        )
        and ex[0].answer == "F"
    )
    assert ex[368].question == (
        "The first day of 2019 is a Tuesday, and today is the first Monday of 2019. What is the date "
        "24 hours "
        "later in MM/DD/YYYY?\nWhich choice is true? Answer choices: (A) 02/08/2018, (B) 10/22/2018, "
        "(C) 01/08/2019, (D) 01/01/2019, (E) 01/08/2043, (F) 01/08/1960."
    )
    assert ex[368].answer == "C"
    again = load_pools(cfg_for("date_understanding", split="random"), SHARED_DATA).examples
    assert all(again[i].question == ex[i].question for i in ex)  # deterministic, independent of the split
    t = load_pools(default_config("tracking_shuffled_objects"), SHARED_DATA).examples[0]
    assert (
        t.question.endswith(
            "At the end of the game, Alice has the \nWhich choice is true? Answer choices: "
            "(A) orange ball, (B) white ball, (C) blue ball."
        )
        and t.answer == "C"
    )


@pytest.mark.shared
@requires_shared
def test_shared_random_split_reproduces_the_shipped_70_30_splits():
    """split=random (seed 0, 0.7) is `generate_split.py`: it regenerates the shipped random-task splits."""
    for key in ("single_eq", "svamp", "strategy_qa", "date_understanding"):
        official = load_pools(default_config(key), SHARED_DATA)
        rnd = load_pools(cfg_for(key, split="random"), SHARED_DATA)
        assert (rnd.train, rnd.test) == (official.train, official.test), key


@pytest.mark.shared
@requires_shared
def test_shared_asdiv_and_mawps():
    a = load_pools(default_config("asdiv"), SHARED_DATA)
    assert len(a.examples) + 138 == 2305 and a.examples[0].answer == "9"  # 138 non-numeric answers skipped
    assert not set(a.train) & set(a.test) and len(a.train) == round(len(a.examples) * 0.7)
    m = load_pools(default_config("mawps"), SHARED_DATA)
    assert len(m.examples) == 1921 and "number0" not in " ".join(e.question for e in m.examples.values())


# --- binary bytes and malformed files: DataError naming file and line (issue 13) ------------------------------

# One file of each reader: (benchmark, file, format).
READER_FILES = [
    ("gsm8k", "gsm8k/test.jsonl", "jsonl"),
    ("single_eq", "singleeq/questions.json", "json_list"),
    ("coin_flip", "coin_flip/coin_flip.json", "examples"),
    ("mawps", "mawps/cv_mawps/fold0/dev.csv", "csv"),
    ("asdiv", "asdiv/ASDiv.xml", "asdiv_xml"),
]


@pytest.mark.parametrize("key, rel, fmt", READER_FILES, ids=[f for _, _, f in READER_FILES])
def test_invalid_utf8_is_a_data_error_naming_file_and_line(tmp_path, key, rel, fmt):
    from sgft_lab.errors import DataError

    data = copy_fixtures(tmp_path)
    path = data / rel
    lines = path.read_bytes().split(b"\n")
    n = next(i for i, line in enumerate(lines) if i >= 1 and len(line.strip()) > 4)  # 0-based, past line 1
    cut = len(lines[n]) // 2
    lines[n] = lines[n][:cut] + b"\xc0\xaf" + lines[n][cut:]  # an overlong '/': never valid UTF-8
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as e:
        load_pools(default_config(key), data, require_train=False)
    assert str(e.value).startswith(f"{path}:{n + 1}: not UTF-8 text (byte 0xc0)"), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key, rel, fmt", READER_FILES, ids=[f for _, _, f in READER_FILES])
def test_malformed_file_is_a_data_error_naming_file_and_line(tmp_path, key, rel, fmt):
    from sgft_lab.errors import DataError

    data = copy_fixtures(tmp_path)
    path = data / rel
    text = path.read_text(encoding="utf-8")
    broken = {"jsonl": "\n{not json\n", "json_list": "\n]\n", "examples": "\n}\n", "asdiv_xml": "\n<unclosed\n",
              "csv": '\n"' + "x" * 200_000 + '",1\n'}[fmt]  # csv: a cell past the csv module's limit
    path.write_text(text.rstrip("\n") + broken, encoding="utf-8")
    line = text.rstrip("\n").count("\n") + 2  # the first line of `broken`
    with pytest.raises(DataError) as e:
        load_pools(default_config(key), data, require_train=False)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: invalid "), msg[:300]
    assert "\n" not in msg


def test_missing_field_and_missing_file_are_data_errors(tmp_path):
    from sgft_lab.errors import DataError, DataFileMissing

    data = copy_fixtures(tmp_path)
    path = data / "gsm8k" / "test.jsonl"
    path.write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match=rf"^{path}:1: field 'answer': missing$"):
        load_pools(default_config("gsm8k"), data)
    path.unlink()
    with pytest.raises(DataFileMissing, match=rf"^{path}: benchmark file not found"):
        load_pools(default_config("gsm8k"), data)
    with pytest.raises(DataFileMissing, match=r"aqua/train\.json"):  # MissingTrainData is one too
        load_real(default_config("aqua"), FIXTURES)
