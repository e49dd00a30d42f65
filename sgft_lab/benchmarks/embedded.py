"""Embedded benchmarks: procedurally generated tasks worded like their public versions.

Four generators, each writing a question, its gold answer and a structured solution ``trace`` (a list of
step dicts) that the reference teacher turns into rationales:

- ``arithmetic``: MultiArith-style word problems ("Tom has 5 apples. He buys 3 more apples. Then ...").
  difficulty = number of arithmetic operations. Scored with the ``multiarith`` key (exact string).
- ``coin_flip``: Kojima et al.'s coin flip wording; difficulty = number of people.
- ``last_letters``: Kojima et al.'s last letter concatenation wording; difficulty = number of words.
- ``word_problems``: ``arithmetic``'s problems in another wording, some of whose verbs ``arithmetic`` uses for
  the opposite operation ("his sister gives him 4 apples" adds), for SGFT's embedded effect: planning, not
  arithmetic, is the hard part. Same knobs, trace and scoring as ``arithmetic``.

Departures from the public tasks (our choice): MultiArith problems are human-written with numbers up to ~100;
ours come from templates with operands <= 20 and every value in 0..60, so that a ~1M-parameter student trained
on CPU for minutes can learn the step-by-step arithmetic. The public coin / letter sets fix 4 people / words;
here that count is the ``difficulty`` knob (the configs default to 4).

Everything is a pure function of its seed (``random.Random`` seeded through hashlib, never ``hash()``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

from .record import Example, Splits

if TYPE_CHECKING:
    from ..config import BenchmarkConfig

Trace = list[dict[str, Any]]

# --------------------------------------------------------------------------------------------------------
# Names (coin flip and last letters use all of them; arithmetic needs a pronoun, so only the gendered ones).

FEMALE_NAMES = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly", "Emily", "Donna", "Michelle",
    "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Dorothy", "Rebecca", "Sharon", "Laura", "Cynthia",
    "Amy", "Kathleen", "Angela", "Shirley", "Brenda", "Emma", "Anna", "Pamela", "Nicole", "Samantha",
    "Katherine", "Christine", "Helen", "Debra", "Rachel", "Carolyn", "Janet", "Maria", "Catherine", "Heather",
    "Diane", "Olivia", "Julie", "Joyce", "Victoria", "Ruth", "Virginia", "Lauren", "Kelly", "Christina",
    "Joan", "Evelyn", "Judith", "Andrea", "Hannah", "Megan", "Cheryl", "Jacqueline", "Martha", "Madison",
    "Teresa", "Gloria", "Sara", "Janice", "Ann", "Kathryn", "Abigail", "Sophia", "Frances", "Jean",
    "Alice", "Judy", "Isabella", "Julia", "Grace", "Amber", "Denise", "Danielle", "Marilyn", "Beverly",
    "Charlotte", "Natalie", "Theresa", "Diana", "Brittany", "Doris", "Kayla", "Alexis", "Lori", "Marie",
    "Whitney", "Erika", "Mireya", "Silvia", "Carolina", "Chanel", "Debby", "Lana", "Carmen", "Rosa",
    "Irene", "Lucy", "Nora", "Ella", "Chloe", "Zoe", "Mia", "Ava", "Lily", "Ruby",
    "Stella", "Hazel", "Violet", "Aurora", "Leah", "Paige", "Gwen", "Ivy", "Jade", "Naomi",
    "Tessa", "Wendy", "Yolanda", "Bianca", "Fiona", "Greta", "Holly", "Ingrid", "June", "Kara",
    "Lena", "Molly", "Nina", "Opal", "Peggy", "Rita", "Tina", "Uma", "Vera", "Wanda",
)  # fmt: skip
MALE_NAMES = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles",
    "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua",
    "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Edward", "Jason", "Jeffrey", "Ryan",
    "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott", "Brandon",
    "Benjamin", "Samuel", "Gregory", "Alexander", "Frank", "Patrick", "Raymond", "Jack", "Dennis", "Jerry",
    "Tyler", "Aaron", "Jose", "Adam", "Nathan", "Henry", "Douglas", "Zachary", "Peter", "Kyle",
    "Ethan", "Walter", "Noah", "Jeremy", "Christian", "Keith", "Roger", "Terry", "Gerald", "Harold",
    "Sean", "Austin", "Carl", "Arthur", "Lawrence", "Dylan", "Jesse", "Jordan", "Bryan", "Billy",
    "Joe", "Bruce", "Gabriel", "Logan", "Albert", "Willie", "Alan", "Juan", "Wayne", "Elijah",
    "Randy", "Roy", "Vincent", "Ralph", "Eugene", "Russell", "Bobby", "Mason", "Philip", "Louis",
    "Benito", "Caleb", "Chase", "Eleazar", "Stan", "Chuck", "Luke", "Tom", "Sam", "Max",
    "Leo", "Oscar", "Hugo", "Felix", "Ivan", "Omar", "Rafael", "Diego", "Pablo", "Marco",
    "Victor", "Hector", "Ruben", "Felipe", "Owen", "Liam", "Lucas", "Oliver", "Miles", "Theo",
    "Ezra", "Jonah", "Silas", "Jasper", "Milo", "Otto", "Reid", "Troy", "Wade", "Dale",
    "Glen", "Kurt", "Neil", "Ross", "Seth", "Toby", "Ned", "Abe", "Gus", "Hank",
)  # fmt: skip
NEUTRAL_NAMES = (
    "Tj", "Jj", "Kc", "Lucky", "Alex", "Casey", "Riley", "Morgan", "Taylor", "Avery",
    "Jamie", "Quinn", "Robin", "Kendall", "Jody", "Sky", "Drew", "Jules", "Rory", "Sage",
)  # fmt: skip
NAMES = tuple(dict.fromkeys(FEMALE_NAMES + MALE_NAMES + NEUTRAL_NAMES))

_PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her")}

# --------------------------------------------------------------------------------------------------------
# Small helpers.


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from JSON-serialisable parts (stable across processes, unlike ``hash()``)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:8], "big")


def _fmt(v: Fraction | int) -> str:
    """A value as a teacher writes it: ``6``, or ``4.5`` when an (erroneous) division leaves a fraction."""
    v = Fraction(v)
    if v.denominator == 1:
        return str(v.numerator)
    return f"{float(v):.2f}".rstrip("0").rstrip(".")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    raise ValueError(f"unknown operation {op!r}")


# --------------------------------------------------------------------------------------------------------
# Arithmetic (MultiArith style).

OBJECTS = (
    "apples", "oranges", "marbles", "stickers", "pencils", "cookies", "books", "crayons", "balloons",
    "shells", "stamps", "cards", "toy cars", "erasers", "muffins", "candies", "flowers", "pens",
)  # fmt: skip
CONTAINERS = (("bag", "bags"), ("box", "boxes"), ("pack", "packs"), ("basket", "baskets"))
RELATIVES = ("sister", "brother", "friend", "mom", "dad", "cousin", "neighbor", "teacher")
# (present, gerund); {n} count, {obj} plural object, {his} possessive pronoun, {rel} a relative.
ADD_ACTIONS = (
    ("buys {n} more {obj}", "buying {n} more {obj}"),
    ("finds {n} more {obj}", "finding {n} more {obj}"),
    ("gets {n} {obj} from {his} {rel}", "getting {n} {obj} from {his} {rel}"),
    ("picks up {n} more {obj}", "picking up {n} more {obj}"),
    ("wins {n} {obj} at a fair", "winning {n} {obj} at a fair"),
)
SUB_ACTIONS = (
    ("gives {n} {obj} to {his} {rel}", "giving {n} {obj} to {his} {rel}"),
    ("loses {n} {obj}", "losing {n} {obj}"),
    ("sells {n} {obj}", "selling {n} {obj}"),
    ("uses {n} {obj}", "using {n} {obj}"),
)
GROUP_ACTIONS = (
    ("buys {g} {cs} with {m} {obj} in each {c}", "buying {g} {cs} with {m} {obj} in each {c}"),
    ("gets {g} {cs} with {m} {obj} in each {c}", "getting {g} {cs} with {m} {obj} in each {c}"),
)
# (present, gerund, question, "each ..." phrase of the answer sentence)
SHARE_ACTIONS = (
    ("puts the {obj} equally into {k} {cs}", "putting the {obj} equally into {k} {cs}",
     "How many {obj} are in each {c}?", "each {c} has"),
    ("shares the {obj} equally among {k} friends", "sharing the {obj} equally among {k} friends",
     "How many {obj} does each friend get?", "each friend gets"),
)  # fmt: skip

MAX_OPERAND = 20  # largest number added or subtracted in one step
MAX_VALUE = 60  # largest value any step reaches
# Operations each plan item costs (difficulty = the sum); "groups" is g * m, then added to the total.
_COST = {"start": 0, "start_groups": 1, "add": 1, "sub": 1, "groups": 2, "share": 1}


def _random_plan(rng: random.Random, difficulty: int) -> list[str]:
    plan = ["start_groups" if rng.random() < 0.2 else "start"]
    left = difficulty - _COST[plan[0]]
    while left > 0:
        options, weights = ["add", "sub"], [3, 3]
        if left >= 2:
            options.append("groups"), weights.append(1)
        if left == 1:
            options.append("share"), weights.append(1)
        item = rng.choices(options, weights)[0]
        plan.append(item)
        left -= _COST[item]
    return plan


def _plan_of(trace: Trace) -> list[str]:
    """The plan items of an arithmetic trace (the add that follows "groups" belongs to it)."""
    return [s["kind"] for s in trace if s["kind"] != "add_groups"]


def _stretch_plan(rng: random.Random, plan: list[str], difficulty: int) -> list[str]:
    """Insert add/sub steps (before a final share) until the plan costs ``difficulty`` operations."""
    plan = list(plan)
    while sum(_COST[p] for p in plan) < difficulty:
        end = len(plan) - 1 if plan[-1] == "share" else len(plan)
        plan.insert(rng.randint(1, end), rng.choice(["add", "sub"]))
    return plan


def _fill_plan(rng: random.Random, plan: list[str], max_operand: int = MAX_OPERAND,
               max_value: int = MAX_VALUE) -> tuple[str, str, Trace] | None:
    """Numbers and wording for a plan, or None when the drawn numbers do not fit the bounds."""
    pronoun = rng.choice(("he", "she"))
    name = rng.choice(MALE_NAMES if pronoun == "he" else FEMALE_NAMES)
    he, _him, his = _PRONOUNS[pronoun]
    obj = rng.choice(OBJECTS)
    c, cs = rng.choice(CONTAINERS)
    subject = {"name": name, "pronoun": pronoun, "object": obj}

    def pair(limit: int) -> tuple[int, int] | None:
        pairs = [(g, m) for g in range(2, 6) for m in range(2, 7) if g * m <= limit]
        return rng.choice(pairs) if pairs else None

    def count(hi: int) -> int | None:
        # Counts 2..hi, as in MultiArith; hi < 3 (a near-empty or near-full total) makes the step infeasible,
        # which keeps answers from piling up on the bounds (2 and max_value).
        return rng.randint(2, hi) if hi >= 3 else None

    trace: Trace = []
    sentences: list[str] = []
    if plan[0] == "start":
        a = rng.randint(2, max_operand)
        trace.append({"kind": "start", "op": None, "value": a, "result": a, **subject})
        sentences.append(f"{name} has {a} {obj}.")
    else:
        g, m = pair(min(30, max_value))  # type: ignore[misc]
        trace.append(
            {
                "kind": "start_groups",
                "op": "*",
                "args": [g, m],
                "refs": [None, None],
                "result": g * m,
                "container": c,
                "containers": cs,
                **subject,
            }
        )
        sentences.append(f"{name} has {g} {cs} with {m} {obj} in each {c}.")
    cur = 0  # index of the step holding the running total
    question = (
        f"How many {obj} does {name} have now?" if len(plan) > 1 else f"How many {obj} does {name} have?"
    )
    for j, item in enumerate(plan[1:]):
        x = trace[cur]["result"]
        lead = "" if j == 0 else rng.choice(("Then ", "After that, "))
        fill = {"obj": obj, "his": his, "rel": rng.choice(RELATIVES), "c": c, "cs": cs}
        if item in ("add", "sub"):
            # values stay >= 2 (no "1 apples"), <= max_value
            n = count(min(max_operand, max_value - x)) if item == "add" else count(min(max_operand, x - 2))
            if n is None:
                return None
            present, gerund = (
                s.format(n=n, **fill) for s in rng.choice(ADD_ACTIONS if item == "add" else SUB_ACTIONS)
            )
            op = "+" if item == "add" else "-"
            trace.append(
                {
                    "kind": item,
                    "op": op,
                    "args": [x, n],
                    "refs": [cur, None],
                    "result": x + n if op == "+" else x - n,
                    "present": present,
                    "gerund": gerund,
                }
            )
            cur = len(trace) - 1
        elif item == "groups":
            gm = pair(min(max_operand, max_value - x))
            if gm is None:
                return None
            g, m = gm
            present, gerund = (s.format(g=g, m=m, **fill) for s in rng.choice(GROUP_ACTIONS))
            trace.append(
                {
                    "kind": "groups",
                    "op": "*",
                    "args": [g, m],
                    "refs": [None, None],
                    "result": g * m,
                    "present": present,
                    "gerund": gerund,
                }
            )
            trace.append(
                {
                    "kind": "add_groups",
                    "op": "+",
                    "args": [x, g * m],
                    "refs": [cur, len(trace) - 1],
                    "result": x + g * m,
                }
            )
            cur = len(trace) - 1
        elif item == "share":
            ks = [k for k in range(2, 7) if x % k == 0 and x // k >= 2]
            if not ks:
                return None
            k = rng.choice(ks)
            tpl = rng.choice(SHARE_ACTIONS)
            present, gerund, question, each = (s.format(k=k, **fill) for s in tpl)
            trace.append(
                {
                    "kind": "share",
                    "op": "/",
                    "args": [x, k],
                    "refs": [cur, None],
                    "result": x // k,
                    "present": present,
                    "gerund": gerund,
                    "each": each,
                }
            )
            cur = len(trace) - 1
        else:
            raise ValueError(f"unknown arithmetic plan item {item!r}")
        sentences.append(lead + (he if lead else _cap(he)) + " " + present + ".")
    sentences.append(question)
    answer = trace[-1]["result"]
    return " ".join(sentences), str(int(answer)), trace


def gen_arithmetic(rng: random.Random, difficulty: int, like: Trace | None = None, *,
                   max_operand: int = MAX_OPERAND, max_value: int = MAX_VALUE) -> tuple[str, str, Trace]:
    """A MultiArith-style problem with ``difficulty`` operations; ``like``: reuse that trace's step kinds.

    ``max_operand`` / ``max_value`` bound the numbers (a second difficulty knob: smaller numbers mean fewer
    arithmetic facts for a tiny student to learn)."""
    if difficulty < 1:
        raise ValueError(f"arithmetic difficulty must be >= 1, got {difficulty}")
    if max_operand < 3 or max_value < max_operand + 2:
        raise ValueError(f"arithmetic bounds need max_operand >= 3 and max_value >= max_operand + 2, "
                         f"got {max_operand}, {max_value}")
    for _ in range(1000):
        if like is not None and sum(_COST[p] for p in _plan_of(like)) <= difficulty:
            plan = _stretch_plan(rng, _plan_of(like), difficulty)
        else:
            plan = _random_plan(rng, difficulty)
        out = _fill_plan(rng, plan, max_operand, max_value)
        if out is not None:
            return out
    raise RuntimeError(f"could not fill an arithmetic plan of difficulty {difficulty}")  # pragma: no cover


# --------------------------------------------------------------------------------------------------------
# Coin flip and last letters (Kojima et al. 2022 wording, exactly).

COIN_HEAD = "A coin is heads up."
COIN_TAIL = 'Is the coin still heads up? Note that "flip" here means "reverse".'


def gen_coin_flip(rng: random.Random, difficulty: int, like: Trace | None = None) -> tuple[str, str, Trace]:
    """``difficulty`` people, each flipping with probability 1/2; answer 'yes' iff the flips are even."""
    if not 1 <= difficulty <= len(NAMES):
        raise ValueError(f"coin_flip difficulty must be in 1..{len(NAMES)}, got {difficulty}")
    people = rng.sample(NAMES, difficulty)
    trace = [{"kind": "coin", "name": p, "flips": rng.random() < 0.5} for p in people]
    body = [
        f"{s['name']} flips the coin." if s["flips"] else f"{s['name']} does not flip the coin."
        for s in trace
    ]
    answer = "yes" if sum(s["flips"] for s in trace) % 2 == 0 else "no"
    return " ".join([COIN_HEAD, *body, COIN_TAIL]), answer, trace


def gen_last_letters(
    rng: random.Random, difficulty: int, like: Trace | None = None
) -> tuple[str, str, Trace]:
    """``difficulty`` distinct names; answer = their last letters concatenated."""
    if not 1 <= difficulty <= len(NAMES):
        raise ValueError(f"last_letters difficulty must be in 1..{len(NAMES)}, got {difficulty}")
    words = rng.sample(NAMES, difficulty)
    trace = [{"kind": "letter", "word": w, "letter": w[-1]} for w in words]
    question = f'Take the last letters of each words in "{" ".join(words)}" and concatenate them.'
    return question, "".join(s["letter"] for s in trace), trace



# --------------------------------------------------------------------------------------------------------
# Word problems (SGFT's embedded task, experiments/effects/sgft.md): the arithmetic generator's problems, numbers
# and traces, told in another wording, so that the difficulty is in mapping the wording to operations.

# Events as (sentence, present, gerund): the sentence is the problem's own wording, its subject may be someone
# else ("his sister gives him 4 apples": an addition); present / gerund retell it with the person as subject
# for the teacher's rationales ("{He} {present}, so 13 + 4 = 17."). Per operation, half of the wordings reuse
# a verb that the ``arithmetic`` generator uses for the other operation (gives / sells there subtract, gets /
# buys add), half are verbs it never uses.
WORD_ADD = (
    ("{his} {rel} gives {him} {n} {obj}", "is given {n} {obj} by {his} {rel}",
     "being given {n} {obj} by {his} {rel}"),
    ("{his} {rel} sells {him} {n} {obj}", "is sold {n} {obj} by {his} {rel}", "being sold {n} {obj} by {his} {rel}"),
    ("{he} receives {n} {obj} in the mail", "receives {n} {obj} in the mail", "receiving {n} {obj} in the mail"),
    ("{he} earns {n} {obj} for doing chores", "earns {n} {obj} for doing chores",
     "earning {n} {obj} for doing chores"),
)
WORD_SUB = (
    ("{he} gets rid of {n} {obj}", "gets rid of {n} {obj}", "getting rid of {n} {obj}"),
    ("{his} {rel} buys {n} {obj} from {him}", "sells {n} {obj} to {his} {rel}", "selling {n} {obj} to {his} {rel}"),
    ("{he} donates {n} {obj}", "donates {n} {obj}", "donating {n} {obj}"),
    ("{he} throws away {n} {obj}", "throws away {n} {obj}", "throwing away {n} {obj}"),
)
WORD_GROUPS = (
    ("{his} {rel} gives {him} {g} {cs} with {m} {obj} in each {c}",
     "is given {g} {cs} with {m} {obj} in each {c}", "being given {g} {cs} with {m} {obj} in each {c}"),
    ("{he} receives {g} {cs} with {m} {obj} in each {c}", "receives {g} {cs} with {m} {obj} in each {c}",
     "receiving {g} {cs} with {m} {obj} in each {c}"),
)
# (sentence = present, gerund, question, "each ..." phrase of the answer sentence)
WORD_SHARE = (
    ("splits the {obj} evenly into {k} {cs}", "splitting the {obj} evenly into {k} {cs}",
     "How many {obj} are in each {c}?", "each {c} has"),
    ("divides the {obj} evenly among {k} friends", "dividing the {obj} evenly among {k} friends",
     "How many {obj} does each friend get?", "each friend gets"),
)  # fmt: skip


def gen_word_problems(rng: random.Random, difficulty: int, like: Trace | None = None, *,
                      max_operand: int = MAX_OPERAND, max_value: int = MAX_VALUE) -> tuple[str, str, Trace]:
    """An ``arithmetic`` problem (same plan, numbers and answer; its trace's step kinds, so the reference
    teacher's SG and rationales apply) retold with the WORD_* wordings, drawn from the same ``rng``."""
    _, answer, trace = gen_arithmetic(rng, difficulty, like, max_operand=max_operand, max_value=max_value)
    start = trace[0]
    he, him, his = _PRONOUNS[start["pronoun"]]
    name, obj = start["name"], start["object"]
    if start["kind"] == "start":
        sentences = [f"{name} has {start['value']} {obj}."]
    else:
        g, m = start["args"]
        sentences = [f"{name} has {g} {start['containers']} with {m} {obj} in each {start['container']}."]
    question = f"How many {obj} does {name} have now?" if len(trace) > 1 else f"How many {obj} does {name} have?"
    out: Trace = [dict(start)]
    for step in trace[1:]:
        out.append(dict(step))
        if step["kind"] == "add_groups":
            continue
        lead = "" if not sentences[1:] else rng.choice(("Then ", "After that, "))
        c, cs = rng.choice(CONTAINERS)
        fill = {"he": he, "him": him, "his": his, "rel": rng.choice(RELATIVES), "obj": obj, "c": c, "cs": cs,
                "n": step["args"][1], "g": step["args"][0], "m": step["args"][1], "k": step["args"][1]}
        if step["kind"] == "share":
            present, gerund, question, each = (s.format(**fill) for s in rng.choice(WORD_SHARE))
            sentence = f"{he} {present}"
            out[-1].update(each=each)
        else:
            table = {"add": WORD_ADD, "sub": WORD_SUB, "groups": WORD_GROUPS}[step["kind"]]
            sentence, present, gerund = (s.format(**fill) for s in rng.choice(table))
        out[-1].update(present=present, gerund=gerund)
        sentences.append(lead + (sentence if lead else _cap(sentence)) + ".")
    return " ".join([*sentences, question]), answer, out


class Generator(NamedTuple):
    """``generate(rng, difficulty, like=None) -> (question, answer, trace)``, scoring key, answer type."""

    generate: Callable[..., tuple[str, str, Trace]]
    task: str
    answer_type: str


GENERATORS: dict[str, Generator] = {
    "arithmetic": Generator(gen_arithmetic, "multiarith", "number"),
    "coin_flip": Generator(gen_coin_flip, "coin_flip", "yes_no"),
    "last_letters": Generator(gen_last_letters, "last_letter_concatenation", "text"),
    "word_problems": Generator(gen_word_problems, "multiarith", "number"),
}


def _generator(name: str) -> Generator:
    if name not in GENERATORS:
        raise ValueError(f"unknown embedded generator {name!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name]


def _example(
    generator: str, ex_id: str, difficulty: int, out: tuple[str, str, Trace], **meta: Any
) -> Example:
    question, answer, trace = out
    g = GENERATORS[generator]
    return Example(
        id=ex_id,
        question=question,
        answer=answer,
        answer_type=g.answer_type,
        trace=trace,
        meta={"difficulty": difficulty, "generator": generator, **meta},
    )


def generate_examples(
    generator: str, n: int, difficulty: int, seed: int, id_prefix: str = "", params: dict | None = None,
    difficulties: Sequence[int] = (),
) -> list[Example]:
    """``n`` examples with distinct questions, deterministic for (generator, difficulty, seed, params).

    Ids are ``{id_prefix}{i}``. ``params``: the generator's keyword knobs (e.g. arithmetic ``max_operand``),
    kept in ``meta["params"]`` so variants use the same ones. ``difficulties``: a mix instead of one
    difficulty -- example i has ``difficulties[i % len(difficulties)]`` (so any cut of the stream holds each
    in equal shares, within one). Raises ValueError when the question space is too small for ``n``.
    """
    g = _generator(generator)
    params = dict(params or {})
    mix = tuple(difficulties)
    key = ("embedded", generator, mix if mix else difficulty, seed) + \
        ((tuple(sorted(params.items())),) if params else ())
    rng = random.Random(stable_seed(*key))
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"{generator} at difficulty {difficulty}: could not draw {n} distinct questions "
                f"(got {len(out)})"
            )
        d = mix[len(out) % len(mix)] if mix else difficulty
        drawn = g.generate(rng, d, **params)
        if drawn[0] in seen:
            continue
        seen.add(drawn[0])
        out.append(_example(generator, f"{id_prefix}{len(out)}", d, drawn,
                            **({"params": params} if params else {})))
    return out


def generator_params(cfg: BenchmarkConfig) -> dict[str, int]:
    """The generator's own knobs that the config sets (arithmetic: max_operand, max_value)."""
    return {k: v for k in ("max_operand", "max_value") if (v := getattr(cfg, k, None)) is not None}


def load_embedded(cfg: BenchmarkConfig) -> Splits:
    """train/val/test of sizes n_train/n_val/n_test with disjoint questions, ids ``{name}:{split}:{i}``.

    One stream of distinct questions is cut test first, then val, then train, so changing ``n_train``
    (a data-size ablation) leaves val and test unchanged. ``n_shot`` keeps a seeded subset of train.
    """
    if cfg.generator is None:
        raise ValueError(
            f"benchmark {cfg.name}: source 'embedded' needs `generator`; known: {', '.join(GENERATORS)}"
        )
    g = _generator(cfg.generator)
    if cfg.task != g.task:
        raise ValueError(
            f"benchmark {cfg.name}: task {cfg.task!r} does not match generator {cfg.generator!r}, "
            f"which is scored as {g.task!r}"
        )
    for key in ("n_train", "n_val", "n_test"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"benchmark {cfg.name}: `{key}` must be >= 0, got {getattr(cfg, key)}")
    bad = [d for d in cfg.difficulty_mix if d < 1]
    if bad:
        raise ValueError(f"benchmark {cfg.name}: `difficulty_mix` entries must be >= 1, got {bad[0]}")
    sizes = {"test": cfg.n_test, "val": cfg.n_val, "train": cfg.n_train}
    pool = generate_examples(cfg.generator, sum(sizes.values()), cfg.difficulty, cfg.data_seed,
                             params=generator_params(cfg), difficulties=cfg.difficulty_mix)
    parts: dict[str, list[Example]] = {}
    start = 0
    for split, size in sizes.items():
        parts[split] = [
            replace(ex, id=f"{cfg.name}:{split}:{i}") for i, ex in enumerate(pool[start : start + size])
        ]
        start += size
    train = parts["train"]
    if cfg.n_shot is not None:  # the data-size ablation: Fine-tune-CoT's subsample_indices over train
        from .splits import subsample

        train = [train[i] for i in subsample(list(range(len(train))), cfg.n_shot, 0)]
    return Splits(task=cfg.task, train=train, val=parts["val"], test=parts["test"])


def variant(example: Example, harder: bool, seed: int = 0) -> Example:
    """A new embedded example like ``example``: harder (difficulty + 1) or similar (same difficulty).

    Arithmetic keeps the step kinds (a harder one gets one more add/sub step); coin flip and last letters
    keep the count of people / words (+1 when harder). Names, objects and numbers are drawn anew.
    """
    generator = example.meta.get("generator")
    if generator not in GENERATORS or not example.trace:
        raise ValueError(
            f"example {example.id}: variant() needs an embedded example (meta.generator and trace)"
        )
    difficulty = int(example.meta["difficulty"]) + (1 if harder else 0)
    kind = "harder" if harder else "similar"
    rng = random.Random(stable_seed("variant", example.id, example.question, kind, seed))
    params = dict(example.meta.get("params") or {})
    for _ in range(100):
        drawn = GENERATORS[generator].generate(rng, difficulty, like=example.trace, **params)
        if drawn[0] != example.question:
            break
    else:  # pragma: no cover
        raise ValueError(f"example {example.id}: could not draw a new {kind} question")
    return _example(
        generator, f"{example.id}/{kind}-{seed}", difficulty, drawn, parent=example.id, variant=kind,
        **({"params": params} if params else {}),
    )


# --------------------------------------------------------------------------------------------------------
# Rationales from traces (used by the reference teacher).

N_PHRASINGS = 4  # phrasings per task; phrasing 0 is the "greedy" one


def trace_generator(trace: Sequence[dict[str, Any]]) -> str:
    """Which generator wrote a trace."""
    kind = trace[0]["kind"] if trace else None
    if kind == "coin":
        return "coin_flip"
    if kind == "letter":
        return "last_letters"
    if kind in ("start", "start_groups"):
        return "arithmetic"
    raise ValueError(f"not an embedded trace (first step kind {kind!r})")


def corruptible_steps(trace: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of steps a teacher can get wrong (arithmetic: those that compute something)."""
    if trace_generator(trace) == "arithmetic":
        return [i for i, s in enumerate(trace) if s.get("op")]
    return list(range(len(trace)))


def rationale_sentences(
    source: Example | Sequence[dict[str, Any]],
    phrasing: int = 0,
    corrupt_step: int | None = None,
    rng: random.Random | None = None,
    wrong_final: bool = False,
) -> tuple[list[str], str]:
    """Rationale sentences for a trace and the final answer they reach (a string scored like the gold).

    ``corrupt_step``: that step is done wrongly (a miscalculation, a misread flip, a wrong letter) and the
    error propagates honestly to later steps and the final answer. ``wrong_final``: every step is right but
    the last sentence states a wrong result. ``rng`` draws the kind of mistake (default: seeded by the trace).
    """
    trace = list(source.trace or []) if isinstance(source, Example) else list(source)
    generator = trace_generator(trace)
    if not 0 <= phrasing < N_PHRASINGS:
        raise ValueError(f"phrasing must be in 0..{N_PHRASINGS - 1}, got {phrasing}")
    if corrupt_step is not None and corrupt_step not in corruptible_steps(trace):
        raise ValueError(f"step {corrupt_step} cannot be corrupted; corruptible: {corruptible_steps(trace)}")
    rng = rng or random.Random(stable_seed("rationale", trace, phrasing, corrupt_step, wrong_final))
    render = {
        "arithmetic": _arith_rationale,
        "coin_flip": _coin_rationale,
        "last_letters": _letters_rationale,
    }
    return render[generator](trace, phrasing, corrupt_step, rng, wrong_final)


def rationale_answer(generator: str, rationale: str) -> str | None:
    """The answer a rationale reaches, read from its text (not from any gold); None if none is found.

    arithmetic and word problems: the last number; coin flip: the last "heads up" / "tails up"; last letters: the last
    quoted string.
    """
    if generator in ("arithmetic", "word_problems"):
        nums = re.findall(r"-?\d+(?:\.\d+)?", rationale.replace(",", ""))
        return nums[-1] if nums else None
    if generator == "coin_flip":
        states = re.findall(r"(heads|tails) up", rationale)
        return None if not states else ("yes" if states[-1] == "heads" else "no")
    if generator == "last_letters":
        quoted = re.findall(r'"([^"]*)"', rationale)
        return quoted[-1] if quoted else None
    raise ValueError(f"unknown embedded generator {generator!r}; known: {', '.join(GENERATORS)}")


def _arith_values(trace: Trace, corrupt_step: int | None, delta: int) -> list[Fraction]:
    """Every step's value, recomputed from its inputs, with ``delta`` added at ``corrupt_step``."""
    vals: list[Fraction] = []
    for i, s in enumerate(trace):
        if s["op"] is None:
            v = Fraction(s["value"])
        else:
            a, b = (Fraction(vals[r]) if r is not None else Fraction(x) for x, r in zip(s["args"], s["refs"]))
            v = _apply(s["op"], a, b)
        vals.append(v + delta if i == corrupt_step else v)
    return vals


def _wrong_value(rng: random.Random, right: Fraction, ok: Callable[[int], bool] = lambda d: True) -> int:
    """A small nonzero offset keeping the value non-negative (and satisfying ``ok``); +1..3 as a fallback."""
    deltas = [1, 2, 3, -1, -2, -3]
    rng.shuffle(deltas)
    for d in deltas:
        if right + d >= 0 and ok(d):
            return d
    return rng.choice([1, 2, 3])


# Arithmetic rationale sentences per phrasing and step kind. Fields: name, obj, he, He, r (the step's value),
# eq ("a op b = r"), present / gerund / Gerund / each (the step's own wording), g, m, cs (start groups).
_ARITH_STEPS = (
    {
        "start": "{name} starts with {r} {obj}.",
        "start_groups": "{name} has {g} {cs} with {m} {obj} in each {c}, so {he} has {eq} {obj}.",
        "add": "{He} {present}, so {eq}.",
        "sub": "{He} {present}, so {eq}.",
        "groups": "{He} {present}, which is {eq} {obj}.",
        "add_groups": "Adding them gives {eq}.",
        "share": "{He} {present}, so {eq}.",
    },
    {
        "start": "First, {name} has {r} {obj}.",
        "start_groups": "First, {name} has {eq} {obj} in {g} {cs}.",
        "add": "After {gerund}, {he} has {eq} {obj}.",
        "sub": "After {gerund}, {he} has {eq} {obj}.",
        "groups": "{Gerund} means {eq} {obj}.",
        "add_groups": "After that, {he} has {eq} {obj}.",
        "share": "After {gerund}, {each} {eq} {obj}.",
    },
    {
        "start": "{name} has {r} {obj} at first.",
        "start_groups": "{name} has {g} {cs} of {m} {obj}, and {eq}.",
        "add": "{eq} because {he} {present}.",
        "sub": "{eq} because {he} {present}.",
        "groups": "{eq} because {he} {present}.",
        "add_groups": "{eq} {obj} in total.",
        "share": "{eq} because {he} {present}.",
    },
    {
        "start": "{name} has {r} {obj}.",
        "start_groups": "{eq}.",
        "add": "{eq}.",
        "sub": "{eq}.",
        "groups": "{eq}.",
        "add_groups": "{eq}.",
        "share": "{eq}.",
    },
)
# The closing sentence per phrasing: (total kept, shared out at the end); {v} is the stated result.
_ARITH_ENDINGS = (
    ("So {name} has {v} {obj}.", "So {each} {v} {obj}."),
    ("In the end, {name} has {v} {obj}.", "In the end, {each} {v} {obj}."),
    ("{name} has {v} {obj} now.", "{Each} {v} {obj}."),
    ("The result is {v}.", "The result is {v}."),
)


def _arith_rationale(
    trace: Trace, phrasing: int, corrupt: int | None, rng: random.Random, wrong_final: bool
) -> tuple[list[str], str]:
    delta = 0
    if corrupt is not None:
        right = _arith_values(trace, None, 0)

        def stays_non_negative(d: int) -> bool:
            return all(v >= 0 for v in _arith_values(trace, corrupt, d))

        delta = _wrong_value(rng, right[corrupt], stays_non_negative)
    vals = _arith_values(trace, corrupt, delta)
    start = trace[0]
    he = _PRONOUNS[start["pronoun"]][0]
    common = {"name": start["name"], "obj": start["object"], "he": he, "He": _cap(he)}
    out: list[str] = []
    for i, s in enumerate(trace):
        fields = {
            **common,
            "r": _fmt(vals[i]),
            "present": s.get("present", ""),
            "gerund": s.get("gerund", ""),
            "Gerund": _cap(s.get("gerund", "")),
            "each": s.get("each", ""),
            "c": s.get("container", ""),
            "cs": s.get("containers", ""),
        }
        if s["op"] is not None:
            a, b = (_fmt(vals[ref]) if ref is not None else str(x) for x, ref in zip(s["args"], s["refs"]))
            fields.update(eq=f"{a} {s['op']} {b} = {fields['r']}", g=s["args"][0], m=s["args"][1])
        out.append(_ARITH_STEPS[phrasing][s["kind"]].format(**fields))
    final = vals[-1]
    if wrong_final:
        final = final + _wrong_value(rng, final)
    v = _fmt(final)
    each = trace[-1].get("each", "")
    ending = _ARITH_ENDINGS[phrasing][trace[-1]["kind"] == "share"]
    out.append(ending.format(**common, v=v, each=each, Each=_cap(each)))
    return out, v


def _coin_rationale(
    trace: Trace, phrasing: int, corrupt: int | None, rng: random.Random, wrong_final: bool
) -> tuple[list[str], str]:
    # A corrupted step is a misread: the teacher believes that person did the opposite.
    flips = [bool(s["flips"]) != (i == corrupt) for i, s in enumerate(trace)]
    heads = [True]
    for f in flips:
        heads.append(heads[-1] != f)
    end_heads = heads[-1] != wrong_final

    def state(h: bool) -> str:
        return "heads up" if h else "tails up"

    names = [s["name"] for s in trace]
    out: list[str] = []
    count = sum(flips)
    parity = "an even" if count % 2 == 0 else "an odd"
    times = f"{count} time" if count == 1 else f"{count} times"
    if phrasing == 0:
        out.append("The coin starts heads up.")
        for i, (n, f) in enumerate(zip(names, flips)):
            out.append(
                f"{n} flips the coin, so it becomes {state(heads[i + 1])}."
                if f
                else f"{n} does not flip the coin, so it stays {state(heads[i + 1])}."
            )
        out.append(f"So the coin is {state(end_heads)}.")
    elif phrasing == 1:
        out += [f"{n} flips the coin once." if f else f"{n} does not flip it." for n, f in zip(names, flips)]
        out.append(f"In total the coin is flipped {times}.")
        out.append(f"{count} is {parity} number, so the coin ends up {state(end_heads)}.")
    elif phrasing == 2:
        out.append("Start: heads up.")
        out += [
            f"{n} flips: {state(heads[i + 1])}." if f else f"{n} does not flip: {state(heads[i + 1])}."
            for i, (n, f) in enumerate(zip(names, flips))
        ]
        out.append(f"The coin is {state(end_heads)} at the end.")
    else:
        flippers = [n for n, f in zip(names, flips) if f]
        if not flippers:
            out.append("Nobody flips the coin.")
        elif len(flippers) == 1:
            out.append(f"The only person who flips the coin is {flippers[0]}.")
        else:
            out.append(f"The people who flip the coin are {_join(flippers)}.")
        out.append(f"That is {count} {'flip' if count == 1 else 'flips'}, {parity} number.")
        out.append(f"So the coin is {state(end_heads)}.")
    return out, "yes" if end_heads else "no"


def _letters_rationale(
    trace: Trace, phrasing: int, corrupt: int | None, rng: random.Random, wrong_final: bool
) -> tuple[list[str], str]:
    words = [s["word"] for s in trace]
    letters = [s["letter"] for s in trace]
    if corrupt is not None:  # a wrong letter: another letter of the word, else any other letter
        right = letters[corrupt]
        options = sorted({ch for ch in words[corrupt].lower() if ch != right}) or [
            ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch != right
        ]
        letters[corrupt] = rng.choice(options)
    result = "".join(letters)
    if wrong_final:  # every letter right, the concatenation wrong: one letter replaced
        i = rng.randrange(len(result))
        ch = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != result[i]])
        result = result[:i] + ch + result[i + 1 :]
    out: list[str] = []
    if phrasing == 0:
        out += [f'The last letter of "{w}" is "{ch}".' for w, ch in zip(words, letters)]
        out.append(f'Concatenating them gives "{result}".')
    elif phrasing == 1:
        for i, (w, ch) in enumerate(zip(words, letters)):
            out.append(
                f'"{w}" ends with "{ch}".'
                if i == 0
                else f'"{w}" ends with "{ch}", so we have "{"".join(letters[: i + 1])}".'
            )
        out.append(f'The result is "{result}".')
    elif phrasing == 2:
        if len(words) == 1:
            out += [f"The word is {words[0]}.", f"Its last letter is {letters[0]}."]
        else:
            out += [f"The words are {_join(words)}.", f"Their last letters are {_join(letters)}."]
        out.append(f'Together they make "{result}".')
    else:
        out += [f"{w}: {ch}." for w, ch in zip(words, letters)]
        out.append(f'So we get "{result}".')
    return out, result
