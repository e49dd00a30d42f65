"""Local teachers: teacher=hf on a real checkpoint (../shared), teacher=vllm's import guard and request mapping."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from sgft_lab.config import TeacherConfig
from sgft_lab.teachers import Request, SamplingParams, build_teacher
from sgft_lab.teachers.cache import TeacherCache
from sgft_lab.teachers.engine import TeacherAccounting, generate

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = SHARED / "models" / "TinyStories-656K"


@pytest.fixture(scope="module")
def tiny_teacher():
    if not TINY.is_dir():
        pytest.skip(f"{TINY} (../shared beside the repo) is absent")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 656K model gains nothing from threads; on a busy CPU they cost 50x
    yield build_teacher(TeacherConfig(name="hf", model=str(TINY), device="cpu", seed=3))
    torch.set_num_threads(threads)


@pytest.mark.shared
def test_hf_greedy_batched_and_cached(tiny_teacher, tmp_path):
    cache = TeacherCache(tmp_path / "c.sqlite")
    acc = TeacherAccounting()
    prompts = ["Once upon a time, there was a", "Lily and Tom went to the park", "Once upon a time, there was a"]
    p = SamplingParams(temperature=0.0, max_tokens=12, stop=("zzz-never",))
    out = generate(tiny_teacher, cache, prompts, p, accounting=acc, batch_size=8, progress=False)
    assert out[0] == out[2] and out[0][0].text and out[0][0].text != out[1][0].text
    c = out[0][0]
    assert c.finish_reason in ("stop", "length") and 0 < c.completion_tokens <= 12 and c.prompt_tokens > 0
    s = acc.stage("generate")
    assert (s.teacher_calls, s.deduplicated, s.requests_sent, s.cost_usd) == (2, 1, 1, 0.0)
    again = generate(tiny_teacher, cache, prompts, p, accounting=acc, stage="again", progress=False)
    assert again == out and acc.stages["again"].cache_hits == 3
    # Greedy does not depend on what else is in the batch (same padding).
    solo = tiny_teacher.complete([Request(prompts[0], p)])
    assert solo[0].text == c.text


@pytest.mark.shared
def test_hf_sample_k_is_reproducible_whatever_the_batch(tiny_teacher):
    s = SamplingParams(temperature=1.0, max_tokens=16)
    p, q = "Once upon a time, there was a", "Lily and Tom went to the park"
    a = tiny_teacher.complete([Request(p, s, 0), Request(p, s, 1), Request(q, s, 1)])
    b = tiny_teacher.complete([Request(q, s, 1), Request(p, s, 1)])
    assert a[1].text == b[1].text and a[2].text == b[0].text  # sample k fixed by (seed, prompt, k)
    assert a[0].text != a[1].text  # different samples differ
    stop = tiny_teacher.complete([Request(p, SamplingParams(temperature=1.0, max_tokens=16, stop=(" ",)), 1)])
    assert stop[0].text == a[1].text.split(" ")[0] and stop[0].finish_reason == "stop"


def test_gumbel_sampler_draws_from_the_softmax():
    """Seeded Gumbel-max over fixed logits matches softmax(logits / T) (and top-p removes the tail)."""
    torch = pytest.importorskip("torch")
    from sgft_lab.teachers.hf import GumbelSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n, counts = 4000, torch.zeros(4)
    g = GumbelSampler(list(range(n)), temperature=1.0, top_p=1.0, device="cpu")
    out = g(None, logits.repeat(n, 1))
    counts += torch.bincount(out.argmax(-1), minlength=4)
    expected = torch.softmax(logits[0], -1)
    assert torch.allclose(counts / n, expected, atol=0.03)
    g = GumbelSampler(list(range(200)), temperature=1.0, top_p=0.7, device="cpu")
    picks = set(g(None, logits.repeat(200, 1)).argmax(-1).tolist())
    assert picks == {0, 1}  # p(0)=0.64 < 0.7, so the nucleus is {0, 1}


def test_vllm_missing_gives_instructions(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError) as e:
        build_teacher(TeacherConfig(name="vllm", model="some/model"))
    msg = str(e.value)
    assert "pip install 'sgft-lab[vllm]'" in msg and "teacher=openai" in msg and "teacher=hf" in msg


def test_vllm_requests_map_onto_its_api(monkeypatch):
    """With a stand-in vllm module: per-request sampling params, seeds at T > 0, token counts."""
    calls = {}

    class SP:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class LLM:
        def __init__(self, **kw):
            calls["init"] = kw

        def generate(self, prompts, sps, use_tqdm=False):
            calls["generate"] = (prompts, sps)
            out = types.SimpleNamespace
            return [out(prompt_token_ids=[1] * len(p), outputs=[out(text=f"<{p}>", finish_reason="length",
                                                                  token_ids=[7, 8])]) for p in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SP))
    t = build_teacher(TeacherConfig(name="vllm", model="m", extra={"tensor_parallel_size": 2}, batch_size=512))
    assert calls["init"]["tensor_parallel_size"] == 2 and calls["init"]["model"] == "m" and t.batch_size == 512
    s = SamplingParams(temperature=0.7, max_tokens=5, stop=("END",))
    out = t.complete([Request("ab", s, 0), Request("ab", s, 1), Request("c", SamplingParams(), 0)])
    assert [c.text for c in out] == ["<ab>", "<ab>", "<c>"]
    assert (out[0].prompt_tokens, out[0].completion_tokens, out[0].finish_reason) == (2, 2, "length")
    sps = calls["generate"][1]
    assert sps[0].seed != sps[1].seed and sps[2].seed is None and sps[0].stop == ["END"] and sps[0].max_tokens == 5
