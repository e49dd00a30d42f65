"""The config schema: one dataclass per config group, and one per option of the ``method`` group.

``validate(cfg)`` merges the composed Hydra config into these dataclasses and checks every value -- types,
choices and ranges, declared on the fields with :func:`setting` -- before the run directory is made and
before any teacher request, so a misspelt key or a bad value ends the run at once with the key named and
the allowed values listed. The method dataclasses are registered in Hydra's ConfigStore as the schema of
their option (``conf/method/<option>.yaml`` lists ``<option>_schema`` first), so their defaults live here
and only here: a method's YAML file adds nothing but a description (tests/test_config.py checks it).
"""

from __future__ import annotations

import enum
from dataclasses import MISSING as _NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import MISSING

from .errors import ConfigError
from .guidance import ANSWER_PREFIX, RESPONSE_PROMPT, FilterRules

__all__ = ["Config", "ConfigError", "validate", "setting"]


def setting(default: Any = _NO_DEFAULT, *, factory: Any = None, ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            choices: tuple | None = None) -> Any:
    """A dataclass field with a range or a set of allowed values that ``validate`` enforces (None passes:
    an optional setting left unset). Lists are checked element by element."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", choices))
            if v is not None}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------------------
# Typed choices (lower-case member names: OmegaConf converts `student.adapter=lora` by name)


class Adapter(str, enum.Enum):
    """How a student is fine-tuned: every weight, LoRA adapters, or LoRA over a 4-bit base."""

    none = "none"
    lora = "lora"
    qlora = "qlora"


class Family(str, enum.Enum):
    decoder = "decoder"
    encoder_decoder = "encoder_decoder"


class Decode(str, enum.Enum):
    """Evaluation decoding backend (students/generation.py)."""

    auto = "auto"
    eager = "eager"
    static = "static"
    vllm = "vllm"


# --------------------------------------------------------------------------------------------------------
# Groups other than method


@dataclass
class StudentConfig:
    name: str = "tiny"
    family: Family = Family.decoder
    # HF hub name or local path; null = build the tiny Llama from the fields below. Required (MISSING): every
    # student preset says which, so `student=hf` without a name fails at validation instead of going tiny.
    name_or_path: Optional[str] = MISSING
    adapter: Adapter = Adapter.none
    lora_r: int = setting(16, ge=1)
    lora_alpha: int = setting(32, ge=1)
    lora_dropout: float = setting(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    padding_side: str = setting("left", choices=("left", "right"))
    # Instruct students: every prompt (training and generation) is one user message in the tokenizer's chat
    # template (methods.md 3.3 for SGFT's guide and response models; zero-shot then asks the bare question).
    chat_template: bool = False
    dtype: str = setting("float32", choices=("float32", "bfloat16", "float16"))
    trust_remote_code: bool = False
    # The tiny student: a Llama built from this config, tokenizer trained on the task's own text.
    hidden_size: int = setting(128, ge=1)
    num_layers: int = setting(4, ge=1)
    num_heads: int = setting(4, ge=1)
    intermediate_size: int = setting(344, ge=1)
    vocab_size: int = setting(512, ge=1)
    max_position_embeddings: int = setting(512, ge=1)
    # Sequence limits (tokens).
    max_input_tokens: int = setting(512, ge=1)
    max_label_tokens: int = setting(512, ge=1)
    max_new_tokens: int = setting(256, ge=1)  # evaluation: new tokens per completion (when max_length is null)
    # Evaluation as Fine-tune-CoT's code decodes (src/custom/model.py): `generate(max_length=...)`, the prompt
    # included for decoders; truncate_early: 256 in epochs 0 and 1. null = by protocol (paper: 1024, true;
    # clean: max_new_tokens, false).
    max_length: Optional[int] = setting(None, ge=1)
    truncate_early: Optional[bool] = None
    # GPT-2 as Fine-tune-CoT trained and evaluated it: every sequence left-padded (pad = EOS) to the longest of
    # its whole split, no position ids, and generation without an attention mask (the pads are attended).
    official_padding: bool = False
    # Evaluation decoding (students/generation.py): auto (static KV cache + compiled steps on CUDA decoders,
    # HF `generate` elsewhere) | eager (HF `generate`) | static (static KV cache; compiled on CUDA) | vllm
    decode: Decode = Decode.auto
    decode_compile: Optional[bool] = None  # static: compile the step (None: on CUDA only)
    decode_check_every: int = setting(16, ge=1)  # static: decoding steps between stop checks
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)  # decode=vllm: vllm.LLM keyword arguments


TEACHERS = ("reference", "openai", "hf", "vllm", "replay")


@dataclass
class TeacherConfig:
    name: str = setting("reference", choices=TEACHERS)
    model: Optional[str] = None
    # reference teacher knobs
    error_rate: float = setting(0.0, ge=0, le=1)  # probability of a wrong step or final answer
    diversity: int = setting(3, ge=1)  # phrasings the reference teacher samples from at T > 0
    seed: int = 0
    # API / local backends
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable (or api_key_file), never the config
    # Passed to the backend's library as is: openai -> extra request body (e.g. {top_k: 20}); hf ->
    # from_pretrained kwargs; vllm -> vllm.LLM kwargs (tensor_parallel_size, gpu_memory_utilization, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    # teacher=openai: any OpenAI-compatible server (OpenAI, vLLM serve, Ollama, TGI)
    endpoint: str = setting("chat", choices=("chat", "completions"))
    api_key_file: Optional[str] = None  # a file holding the key (wins over api_key_env)
    system_prompt: Optional[str] = None  # chat endpoint: optional system message
    send_seed: bool = True  # at T > 0 send seed=f(seed, sample index) so sample k is reproducible where honoured
    max_tokens_field: str = setting("max_tokens", choices=("max_tokens", "max_completion_tokens"))
    prompts_per_call: int = setting(1, ge=1)  # completions endpoint: prompts per request (Fine-tune-CoT sent 20)
    cache_namespace: Optional[str] = None  # replaces base_url in the cache identity (same model, other host)
    # The generation engine (async backends): concurrency, rate limits, retries, timeout
    concurrency: int = setting(16, ge=1)
    requests_per_minute: Optional[float] = setting(None, gt=0)
    tokens_per_minute: Optional[float] = setting(None, gt=0)
    max_retries: int = setting(8, ge=0)
    retry_passes: int = setting(3, ge=0)  # end-of-stage passes over requests that ran out of retries
    backoff_base_s: float = setting(0.5, ge=0)
    backoff_max_s: float = setting(60.0, ge=0)
    request_timeout_s: float = setting(120.0, gt=0)
    prices: dict[str, Any] = field(default_factory=dict)  # {model: {input: USD/1M, output: USD/1M}} overrides
    # teacher=hf / teacher=vllm: local models (model = hub name or path)
    device: Optional[str] = None  # hf: cuda | mps | cpu | cuda:1 ...; None = best available
    dtype: str = setting("auto", choices=("auto", "float32", "bfloat16", "float16"))
    use_chat_template: bool = False  # wrap each prompt as a user message (instruct models)
    trust_remote_code: bool = False
    batch_size: Optional[int] = setting(None, ge=1)  # prompts per backend call; None = method.teacher_batch_size
    # teacher=replay: completions read from JSONL (see sgft_lab/teachers/replay.py for the schema)
    replay_files: list[str] = field(default_factory=list)
    replay_missing: str = setting("error", choices=("error", "skip"))
    replay_match: str = setting("normalized", choices=("exact", "normalized"))


@dataclass
class BenchmarkConfig:
    name: str = "embedded_arithmetic"
    task: str = "multiarith"  # Fine-tune-CoT scoring key used by answers.py
    source: str = setting("embedded", choices=("embedded", "local", "hub"))
    generator: Optional[str] = setting("arithmetic", choices=("arithmetic", "coin_flip", "last_letters",
                                                                        "word_problems"))
    difficulty: int = setting(2, ge=1)  # steps / flips / words
    # Embedded: a mix of difficulties instead (question i has difficulty_mix[i % len]: every split holds each
    # in equal shares), as a real benchmark mixes easy and hard problems; [] = `difficulty` alone.
    difficulty_mix: list[int] = field(default_factory=list)
    n_train: int = setting(1000, ge=1)
    n_val: int = setting(100, ge=0)
    n_test: int = setting(200, ge=1)
    data_seed: int = 0
    split: str = setting("random", choices=("random", "fine_tune_cot", "fine_tune_cot_template"))
    val_fraction: float = setting(0.1, ge=0, lt=1)  # validation carved from train (seeded) for real benchmarks
    train_fraction: float = setting(0.7, gt=0, lt=1)  # split=random on real benchmarks: train share
    n_shot: Optional[int] = setting(None, ge=1)  # subsample training questions (data-size ablations)
    data_dir: Optional[str] = None
    # Embedded arithmetic: operand and value bounds of the generator (None: the generator's defaults).
    max_operand: Optional[int] = setting(None, ge=1)
    max_value: Optional[int] = setting(None, ge=1)
    # source=hub: datasets.load_dataset options
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    hub_splits: list[str] = field(default_factory=list)  # [] = the registry's split names
    hub_data_files: Optional[Any] = None
    hub_cache_dir: Optional[str] = None
    hub_order_matches: bool = False  # the hub copy's row order equals the official files' (split files apply)


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = setting(20, ge=1)
    batch_size: int = setting(8, ge=1)
    eval_batch_size: int = setting(64, ge=1)
    lr: float = setting(3e-4, gt=0)
    weight_decay: float = setting(0.01, ge=0)
    warmup_ratio: float = setting(0.0, ge=0, lt=1)
    scheduler: str = setting("constant", choices=("constant", "linear", "cosine"))
    gradient_clip_val: Optional[float] = setting(None, gt=0)
    accumulate_grad_batches: int = setting(1, ge=1)
    eval_every_n_epochs: int = setting(1, ge=1)
    max_eval_examples: Optional[int] = setting(None, ge=1)  # cap val/test size (smoke runs)
    log_every_n_steps: int = setting(10, ge=1)
    num_workers: int = setting(0, ge=0)
    enable_progress_bar: bool = True
    save_checkpoints: bool = True
    threads: Optional[int] = setting(None, ge=1)  # torch.set_num_threads on CPU
    # Scale and speed (training.py documents each): several devices/nodes, optimizer, memory, throughput.
    num_nodes: int = setting(1, ge=1)
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)  # DDPStrategy / FSDPStrategy / ... kwargs
    max_steps: int = setting(-1, ge=-1)  # -1 = no step limit (max_epochs decides)
    optimizer: str = setting("adamw", choices=("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit",
                                               "paged_adamw_32bit"))
    gradient_checkpointing: Optional[bool] = None  # None: on for adapter=qlora (peft's recipe), else off
    group_by_length: bool = False  # batches of similar length (shuffled groups): little compute on padding
    loss_chunk_size: Optional[int] = setting(4096, ge=1)  # tokens per LM-head + CE chunk; null = model's loss
    compile: bool = False  # torch.compile the student's forward (training)
    compile_mode: Optional[str] = None  # torch.compile mode: default | reduce-overhead | max-autotune
    compile_backend: str = "inductor"
    deterministic: bool = False  # Lightning's deterministic algorithms (seed control beyond `seed`)
    checkpoint_every_n_steps: Optional[int] = setting(None, ge=1)  # also rewrite last.ckpt every n steps


@dataclass
class LoggerConfig:
    wandb: bool = False
    project: str = "sgft_lab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    offline: Optional[bool] = None  # None: online if WANDB_API_KEY is set, else offline with a notice
    log_predictions: bool = True  # a wandb.Table of the prediction rows after every evaluation
    log_artifacts: bool = False  # the trained student (checkpoint + tokenizer) and the teacher data as artifacts


@dataclass
class PathsConfig:
    root_dir: str = "."
    output_dir: str = "outputs"
    cache_dir: str = "outputs/cache"  # teacher cache (SQLite), shared by all runs
    data_dir: Optional[str] = None  # real benchmark files (also SGFT_LAB_DATA_DIR)


@dataclass
class StandIns:
    """A tier's replacements for real options: preset name -> stand-in preset name."""

    student: dict[str, str] = field(default_factory=dict)
    benchmark: dict[str, str] = field(default_factory=dict)
    default_student: str = "tiny"  # a real student not in the table
    default_benchmark: str = "embedded_arithmetic"  # a real benchmark not in the table
    response: str = "tiny_small"  # SGFT's response model (method.response)
    teacher: str = "reference"
    trainer: str = "cpu"
    caps: dict[str, int] = field(default_factory=dict)  # swept values above these are capped (e.g. D)
    # teacher.model -> the reference teacher's error rate standing in for that teacher (a teacher ablation)
    teacher_error_rate: dict[str, float] = field(default_factory=dict)


@dataclass
class TierConfig:
    """``tier=embedded`` (conf/tier/embedded.yaml, sgft_lab/tiers.py): any preset at a tiny scale on CPU."""

    name: str = "embedded"
    stand_ins: StandIns = field(default_factory=StandIns)
    n_train: Optional[int] = setting(None, ge=1)
    n_val: Optional[int] = setting(None, ge=0)
    n_test: Optional[int] = setting(None, ge=1)
    max_epochs: Optional[int] = setting(None, ge=1)
    max_new_tokens: Optional[int] = setting(None, ge=1)
    threads: Optional[int] = setting(None, ge=1)


# --------------------------------------------------------------------------------------------------------
# The method group: one dataclass per option


@dataclass
class MethodConfig:
    """What every method has. ``template`` is the student's sample / prompt format (methods.md 2.4)."""

    name: str = MISSING
    template: str = MISSING

    def uses_teacher(self) -> bool:
        return False

    def uses_training(self) -> bool:
        return True


@dataclass
class RationaleSettings:
    """Teacher zero-shot-CoT rationales (methods.md 2.2): stage limits and request batching."""

    rationale_max_tokens: int = setting(128, ge=1)  # teacher stage-1 max_tokens
    answer_max_tokens: int = setting(128, ge=1)  # teacher stage-2 max_tokens
    teacher_batch_size: int = setting(64, ge=1)  # prompts handed to the teacher engine at a time


@dataclass
class FineTuneCoTConfig(RationaleSettings, MethodConfig):
    """Fine-tune-CoT (methods.md 2): teacher rationales -> correctness filter -> fine-tune the student."""

    name: str = "fine_tune_cot"
    template: str = setting("ft_cot_token", choices=("ft_cot_token", "ft_cot_natural"))
    diverse_samples: Optional[int] = setting(1, ge=1)  # D rationales per question (1 = greedy, >1 at T)
    diverse_temperature: float = setting(0.7, ge=0)
    only_correct: bool = True  # the correctness filter (methods.md 2.3)

    def uses_teacher(self) -> bool:
        return True

    def rationale_temperature(self) -> float:
        """Stage 1's temperature: greedy for Fine-tune-CoT's one rationale, T for diverse reasoning's D."""
        return 0.0 if self.diverse_samples == 1 else self.diverse_temperature


PAPER_D = {"multiarith": 64, "svamp": 64}  # methods.md 2.6: D per task in the headline tables ...
PAPER_D_DEFAULT = 8  # ... and for every other task


@dataclass
class DiverseReasoningConfig(FineTuneCoTConfig):
    """Diverse reasoning (methods.md 2.6): D rationales per question at T = 0.7, every correct one kept.
    ``diverse_samples: null`` = the paper's D for the benchmark (64 for MultiArith and SVAMP, else 8)."""

    name: str = "diverse_reasoning"
    diverse_samples: Optional[int] = setting(None, ge=1)

    def rationale_temperature(self) -> float:
        """Always sampled: D = 1 is the first T = 0.7 sample (the official ft_cot_t70_1aug), not the greedy one."""
        return self.diverse_temperature


@dataclass
class VanillaFTConfig(MethodConfig):
    """Vanilla fine-tuning (methods.md 5): question -> gold answer, no teacher."""

    name: str = "vanilla_ft"
    template: str = setting("ft_token", choices=("ft_token",))


@dataclass
class ZeroShotConfig(MethodConfig):
    """Zero-shot prompting of the untrained student (methods.md 5)."""

    name: str = "zero_shot"
    template: str = setting("zs", choices=("zs",))

    def uses_training(self) -> bool:
        return False


@dataclass
class ZeroShotCoTConfig(MethodConfig):
    """Zero-shot-CoT prompting (Kojima et al.; methods.md 5), decoder students; stage lengths as the teacher's."""

    name: str = "zero_shot_cot"
    template: str = setting("zs_cot", choices=("zs_cot",))
    rationale_max_tokens: int = setting(128, ge=1)  # stage-1 new tokens
    answer_max_tokens: int = setting(128, ge=1)  # stage-2 new tokens

    def uses_training(self) -> bool:
        return False


@dataclass
class FewShotCoTConfig(MethodConfig):
    """Few-shot-CoT prompting (Wei et al.; methods.md 5) with Fine-tune-CoT's exemplars."""

    name: str = "few_shot_cot"
    template: str = setting("fs_cot", choices=("fs_cot",))
    max_input_length: int = setting(768, ge=1)  # tokens: Fine-tune-CoT's fs_cot input limit (cut from the right)
    few_shot_key: Optional[str] = None  # which prompt of the file (default: the benchmark's key)
    n_exemplars: int = setting(4, ge=1)  # embedded benchmarks only: first n training questions as exemplars

    def uses_training(self) -> bool:
        return False


@dataclass
class LISASettings:
    enabled: bool = True  # the paper's guide training (3.2); false = student.adapter (LoRA/QLoRA/none)
    layers: int = setting(2, ge=1)  # gamma: blocks trainable at a time (methods.md 3.8)
    interval: int = setting(20, ge=1)  # K: optimizer steps between draws


@dataclass
class ResponsePretrain:
    """Embedded tier only: how the tiny response model learns to follow guidance (our choice, a departure)."""

    mode: str = setting("auto", choices=("auto", "on", "off"))  # auto: pre-train tiny random-init models
    n_questions: int = setting(3000, ge=1)  # many distinct problems, few epochs (a small pool is memorised)
    difficulties: list[int] = setting(factory=list, ge=1)  # [] = benchmark difficulty -1 .. +1
    formats: dict[str, float] = field(default_factory=lambda: {"guided": 0.4, "zero_shot": 0.2,
                                                                "zero_shot_cot": 0.4})
    max_epochs: int = setting(2, ge=1)
    batch_size: int = setting(32, ge=1)
    lr: float = setting(3e-3, gt=0)
    pool_seed: int = 10_000  # generator seed offset of the pool (the benchmark uses data_seed)


SG_PROMPTS = ("I", "II", "III", "IV", "V")
SGFT_BASELINES = ("zero_shot", "zero_shot_cot")


@dataclass
class SGFTConfig(RationaleSettings, MethodConfig):
    """SGFT (methods.md 3). Every choice the paper leaves open is a field here (experiments/sgft/README.md).
    The guide is ``student``; the response model is ``response`` (any student preset:
    ``student@method.response=PRESET``)."""

    name: str = "sgft"
    template: str = setting("fs_cot", choices=("fs_cot",))  # answers scored with prefix 'The answer is' (3.5)
    response: Optional[StudentConfig] = None
    prompt: str = setting("IV", choices=SG_PROMPTS)  # the teacher's SG prompt (3.3); III and V are few-shot
    guide_prompt: str = setting("IV", choices=("I", "II", "IV"))  # the guide's (zero-shot) instruction
    n_prompt_examples: int = setting(3, ge=1)  # few-shot examples (III, V)
    prompt_examples: list[dict[str, str]] = field(default_factory=list)  # [{question, guidance}]; [] = ref.
    n_sg: Optional[int] = setting(300, ge=1)  # SG training questions (null: all of train); the paper ~3,000
    sample_seed: int = 0  # which questions: the first n of a seeded shuffle of train
    sg_max_tokens: int = setting(256, ge=1)  # teacher max_tokens for an SG
    retry: bool = True  # one retry with the extra instruction, then drop (3.4)
    filter: FilterRules = field(default_factory=FilterRules)
    guide_max_new_tokens: int = setting(128, ge=1)  # 3.5 says 256; the embedded SG (<= 6 short steps) fits
    answer_max_new_tokens: int = setting(160, ge=1)  # 3.5 says 512 (the sgft/* presets set 256 / 512)
    response_prompt: str = RESPONSE_PROMPT  # needs {question} and {sg}
    answer_prefix: str = ANSWER_PREFIX  # scoring: first candidate after it, else the last (fs_cot rule)
    lisa: LISASettings = field(default_factory=LISASettings)
    response_pretrain: ResponsePretrain = field(default_factory=ResponsePretrain)
    # The tiny response model's pre-training pool (embedded tier): the embedded generator it is drawn from
    # (null: the benchmark's own) and that generator's number knobs ({}: the generator's defaults), e.g. plain
    # `arithmetic` with the benchmark's bounds under embedded_word_problems (experiments/effects/sgft.md).
    response_pool_generator: Optional[str] = None
    response_pool_params: dict[str, int] = field(default_factory=dict)
    # How the guided pre-training samples are worded (embedded tier): `same` as the pool, or `undirected`: each
    # add / sub event says no direction ("Then the number of apples changes by 4."), so the response model
    # learns to take the operation from the guidance (data/sg.py undirected_question).
    response_guided_wording: str = setting("same", choices=("same", "undirected"))
    # The seed of the tiny response models' pre-training (null: the run's seed). Fixed: one response model for
    # every seed of a sweep, as the paper's off-the-shelf response model is (seeds then vary SG and guide).
    response_seed: Optional[int] = None
    eval_split: str = setting("test", choices=("test", "val"))  # which split step 4 and 5 read (val: tuning)
    # A second response model that the same guide's SG is also given (a tiny one is pre-trained like
    # `response`, with its seed + transfer_seed_offset): systems `transfer_student` (guided), `transfer_teacher_sg`
    # and `transfer_response_{baseline}`. null: none. Set with student@method.transfer_response=PRESET.
    transfer_response: Optional[StudentConfig] = None
    transfer_seed_offset: int = 1000
    baselines: list[str] = setting(factory=lambda: list(SGFT_BASELINES), choices=SGFT_BASELINES)
    teacher_sg_on_test: Optional[bool] = None  # None: only with the reference teacher (free) | true | false
    cot_ft: bool = True  # the CoT fine-tuning baseline
    cot_ft_scales: list[int] = setting(factory=lambda: [1], ge=1)  # CoT samples = scale x n_sg
    # methods.md 3.8's CoT-FT baseline: every training question with this many rationales at T (4 on GSM8K,
    # at most 29,892 samples); system `cot_ft`. null: the scaled baselines only.
    cot_ft_per_question: Optional[int] = setting(None, ge=1)
    cot_ft_init: str = setting("response", choices=("response", "guide"))  # what CoT-FT fine-tunes
    diverse_temperature: float = setting(0.7, ge=0)  # CoT-FT: several rationales per question at this T
    # The ablation of 3.7 (guide trained? x solver CoT-trained?; conf/experiment/sgft/ablation.yaml).
    # train_guide=false: no SG data, the guide model answers Prompt IV as it is (an untrained guide).
    # solver=cot_ft: the response model is CoT fine-tuned first (the CoT-FT baseline: cot_ft_per_question's
    # when set, else the first cot_ft_scales'), then answers with the guide's SG.
    train_guide: bool = True
    solver: str = setting("response", choices=("response", "cot_ft"))

    def uses_teacher(self) -> bool:
        return True


FDD_EASY_PROMPT = (
    "Here is a math word problem that a student solved correctly:\n{question}\nWrite one new, "
    "self-contained math word problem that is harder: it needs more reasoning steps or more involved "
    "relations, and it has a single numerical answer. Output only the new problem.")
FDD_HARD_PROMPT = (
    "Here is a math word problem that a student could not solve:\n{question}\nWrite one new, "
    "self-contained math word problem that tests the same skills at the same difficulty, with a "
    "different context and different numbers, and a single numerical answer. Output only the new problem.")


@dataclass
class FDDConfig(RationaleSettings, MethodConfig):
    """FDD's feedback loop (methods.md 4.2; sgft_lab/methods/fdd.py documents each choice)."""

    name: str = "fdd"
    template: str = setting("ft_cot_token", choices=("ft_cot_token",))  # CoT students: Fine-tune-CoT's format
    rationale: str = setting("cot", choices=("cot", "pot"))  # cot (stage-1 rationales) | pot (programs)
    rounds: int = setting(3, ge=1)  # feedback rounds after round 0 (R+1 students are trained)
    retrain: str = setting("base", choices=("base", "continue"))  # each round from the base student | previous
    epochs_per_round: Optional[int] = setting(2, ge=1)  # CPU budget (methods.md 4.2: 10); null = max_epochs
    round0_epochs: Optional[int] = setting(None, ge=1)  # round 0's own epochs (null: epochs_per_round)
    dev_fraction: float = setting(0.05, gt=0, lt=1)  # each round's model is selected on this share of its data
    eval_every_n_epochs: Optional[int] = setting(2, ge=1)  # null = trainer.eval_every_n_epochs
    easy_prompt: str = FDD_EASY_PROMPT
    hard_prompt: str = FDD_HARD_PROMPT
    variant_temperature: float = setting(0.7, ge=0)  # > 0: a problem expanded again gets a new variant
    variant_max_tokens: int = setting(256, ge=1)
    max_new_per_round: Optional[int] = setting(300, ge=1)  # CPU budget; null = |original train| (4.2)
    verify: str = setting("agreement", choices=("agreement", "reference"))  # reference: the embedded solver
    label_samples: int = setting(3, ge=1)
    label_temperature: float = setting(0.7, ge=0)
    label_min_agree: int = setting(2, ge=1)
    program_max_tokens: int = setting(256, ge=1)  # teacher PoT programs
    dedupe_ngram: int = setting(8, ge=1)  # word n-grams shared with a test/val question ...
    dedupe_threshold: float = setting(0.5, gt=0, le=1)  # ... in this fraction -> dropped
    pot_timeout_s: float = setting(5.0, gt=0)
    pot_memory_mb: int = setting(512, ge=16)
    pot_workers: int = setting(4, ge=1)  # sandbox processes at once
    # false: the no-feedback control (methods.md 4.4): as many new problems per round, each a similar problem
    # (hard_prompt) of a seeded random draw of the pool; no student answers are read. Entries: system no_feedback
    feedback: bool = True
    # true: each round's selected student also reads the in-domain val split (result entries with split val
    # and benchmark = the in-domain benchmark), so a design can be tuned without the test split
    read_val: bool = False
    # Out-of-domain tests (methods.md 4.3), read with every round's selected student: benchmark presets, their
    # test split (ood_split=all: every problem). An embedded in-domain benchmark reads ood_stand_ins instead.
    ood_benchmarks: list[str] = field(default_factory=lambda: ["asdiv", "svamp", "multiarith"])
    ood_split: str = setting("test", choices=("test", "all"))
    ood_stand_ins: dict[str, str] = field(default_factory=lambda: {
        "asdiv": "embedded_arithmetic_deeper", "svamp": "embedded_arithmetic_bignum",
        "multiarith": "embedded_arithmetic_onestep"})

    def uses_teacher(self) -> bool:
        return True


@dataclass
class FDDPoTConfig(FDDConfig):
    """FDD with program-of-thought rationales (methods.md 4.2): students write programs computing ``ans``.
    rationale=mixed (methods.md 4.4's second ablation): programs and CoT rationales, the input naming which."""

    name: str = "fdd_pot"
    template: str = setting("pot", choices=("pot",))
    rationale: str = setting("pot", choices=("pot", "mixed"))


@dataclass
class DSSConfig(RationaleSettings, MethodConfig):
    """Distilling Step-by-Step (Hsieh et al. 2023; methods.md 5): one student, two tasks -- ``predict:`` ->
    gold answer (every training question) and ``explain:`` -> teacher rationale (Fine-tune-CoT's filtered
    ones) -- trained on ``alpha * label loss + (1 - alpha) * rationale loss``; only ``predict:`` at inference."""

    name: str = "dss"
    template: str = setting("dss_predict", choices=("dss_predict",))  # the evaluated (label) task
    alpha: float = setting(0.5, ge=0, le=1)  # the label task's weight (the paper's recommended 0.5)
    only_correct: bool = True  # Fine-tune-CoT's correctness filter on the rationales (false: every rationale)

    def uses_teacher(self) -> bool:
        return True


METHOD_SCHEMAS: dict[str, type[MethodConfig]] = {
    "fine_tune_cot": FineTuneCoTConfig,
    "diverse_reasoning": DiverseReasoningConfig,
    "vanilla_ft": VanillaFTConfig,
    "zero_shot": ZeroShotConfig,
    "zero_shot_cot": ZeroShotCoTConfig,
    "few_shot_cot": FewShotCoTConfig,
    "sgft": SGFTConfig,
    "fdd": FDDConfig,
    "fdd_pot": FDDPoTConfig,
    "dss": DSSConfig,
}


# --------------------------------------------------------------------------------------------------------
# The root


PROTOCOLS = ("clean", "paper")


@dataclass
class Config:
    method: Any = None  # one of METHOD_SCHEMAS (its option's schema, chosen by `method=NAME`)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    experiment: Optional[str] = None  # name of the experiment preset, if any
    tier: Optional[TierConfig] = None  # tier=embedded (conf/tier/embedded.yaml); None = the preset's own scale
    # paper: what the paper's code did (the whole official train split, no validation, per-epoch test, the
    #   best test epoch reported as the paper's selection, its decoding length). clean: a seeded validation
    #   carve, model selection on validation only, the test split read once (sgft_lab/run.py).
    protocol: str = setting("clean", choices=PROTOCOLS)
    dry_run: bool = False  # compose, validate, load the data, write plan.json; no teacher, no model, no training
    print_table: bool = True


# --------------------------------------------------------------------------------------------------------
# Validation


def validate(cfg: Any, task_overrides: list[str] | None = None) -> Config:
    """Merge a composed config (DictConfig or plain dict) into the schema, apply the tier (sgft_lab/tiers.py)
    and check every value; raise ConfigError naming the key and the allowed values."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        if not isinstance(cfg, dict):
            if task_overrides is None and "hydra" in cfg:
                task_overrides = list(cfg.hydra.overrides.task)
            tiered = cfg.get("tier") is not None  # a tier replaces whole groups: their ??? values go with them
            cfg = {k: OmegaConf.to_container(v, resolve=True, throw_on_missing=not tiered)
                   if OmegaConf.is_config(v) else v for k, v in ((k, cfg[k]) for k in cfg if k != "hydra")}
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        if cfg.get("tier") is not None:
            from .tiers import apply_tier

            cfg = apply_tier(cfg, task_overrides or [])
        method = cfg.pop("method", None)
        obj: Config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))  # type: ignore
        obj.method = method_config(method)
    except OmegaConfBaseException as e:
        raise config_error(e) from None
    resolve(obj)
    check(obj)
    return obj


def resolve(c: Config) -> None:
    """Settings whose null means "as the paper / the protocol says", made explicit (saved in config.yaml)."""
    if isinstance(c.method, DiverseReasoningConfig) and c.method.diverse_samples is None:
        c.method.diverse_samples = PAPER_D.get(c.benchmark.name, PAPER_D_DEFAULT)
    paper = c.protocol == "paper"
    if c.student.max_length is None and paper:
        c.student.max_length = 1024  # Fine-tune-CoT: generate(max_length=1024), the prompt included
    if c.student.truncate_early is None:
        c.student.truncate_early = paper  # ... and 256 in epochs 0 and 1


def method_config(node: Any) -> MethodConfig:
    """A ``method`` node as its option's dataclass (by ``name``)."""
    from omegaconf import OmegaConf

    if isinstance(node, MethodConfig):
        return node
    if not isinstance(node, dict) or not node.get("name"):
        raise ConfigError("invalid config at `method`: no method chosen; allowed: "
                          + ", ".join(METHOD_SCHEMAS))
    from omegaconf.errors import OmegaConfBaseException

    schema = METHOD_SCHEMAS.get(node["name"])
    if schema is None:
        raise ConfigError(f"invalid config at `method.name`: {node['name']!r}; allowed: "
                          + ", ".join(METHOD_SCHEMAS))
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))  # type: ignore
    except OmegaConfBaseException as e:
        raise config_error(e, prefix="method") from None


def config_error(e: Exception, prefix: str = "") -> ConfigError:
    """One line from an OmegaConf / Hydra error: the key, what is wrong, what is allowed."""
    full_key = getattr(e, "full_key", None) or ""
    if prefix:
        full_key = f"{prefix}.{full_key}" if full_key else prefix
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    obj_type = getattr(e, "object_type", None)
    if "Missing mandatory value" in msg:
        return ConfigError(f"invalid config at `{full_key}`: a value is required here (it is ??? in the "
                           "preset); set it on the command line")
    if ("not in struct" in msg or "not in " in msg) and is_dataclass(obj_type):
        name = full_key.rsplit(".", 1)[-1]
        allowed = ", ".join(f.name for f in fields(obj_type))
        where = full_key.rsplit(".", 1)[0] if "." in full_key else "the config"
        option = next((k for k, v in METHOD_SCHEMAS.items() if v is obj_type), None)
        if where == "method" and option:
            where = f"method {option}"
            owners = [k for k, v in METHOD_SCHEMAS.items() if name in {f.name for f in fields(v)}]
            if owners:  # a key of another method: say how to reach it
                allowed += (f" (`{name}` is a key of {', '.join(owners)}: choose that method; a sweep over "
                            "methods composes the default method first, so set such keys in a preset whose "
                            "defaults choose one of them)")
        return ConfigError(f"invalid config at `{full_key}`: `{name}` is not a key of {where}; "
                           f"allowed: {allowed}")
    enum_type = getattr(e, "ref_type", None)
    if "Invalid value" in msg or "could not be converted" in msg or enum_type is not None:
        return ConfigError(f"invalid config at `{full_key}`: {msg}")
    return ConfigError(f"invalid config at `{full_key or '?'}`: {msg}")


def check(c: Config) -> None:
    """Every value of every group against its field's range and choices, then the cross-field rules."""
    _check_fields(c, "")
    if bad := [d for d in c.benchmark.difficulty_mix if d < 1]:
        raise ConfigError(f"invalid config at `benchmark.difficulty_mix`: {bad[0]}; allowed: difficulties >= 1 "
                          "([] = benchmark.difficulty alone)")
    m = c.method
    if isinstance(m, SGFTConfig):
        if m.response is None:
            raise ConfigError("invalid config at `method.response`: SGFT needs a response model; allowed: any "
                              "student preset (student@method.response=PRESET)")
        if not 0 <= m.filter.min_steps <= m.filter.max_steps:
            raise ConfigError("invalid config at `method.filter.min_steps`: allowed: 0 <= min_steps <= "
                              f"max_steps ({m.filter.max_steps})")
        if "{question}" not in m.response_prompt or "{sg}" not in m.response_prompt:
            raise ConfigError("invalid config at `method.response_prompt`: allowed: a template containing "
                              "{question} and {sg}")
        if m.lisa.enabled and c.student.adapter is not Adapter.none:
            raise ConfigError(f"invalid config at `method.lisa.enabled`: LISA is full-parameter fine-tuning, "
                              f"but student.adapter={c.student.adapter.value}; allowed: student.adapter=none, "
                              "or method.lisa.enabled=false to train the guide with the adapter")
        if unknown := sorted(set(m.response_pretrain.formats) - {"guided", "zero_shot", "zero_shot_cot"}):
            raise ConfigError(f"invalid config at `method.response_pretrain.formats`: unknown {unknown}; "
                              "allowed: guided, zero_shot, zero_shot_cot")
    if isinstance(m, FDDConfig):
        if m.label_min_agree > m.label_samples:
            raise ConfigError(f"invalid config at `method.label_min_agree`: {m.label_min_agree}; allowed: "
                              f"<= method.label_samples ({m.label_samples})")
        for key in ("easy_prompt", "hard_prompt"):
            if getattr(m, key).count("{question}") != 1:
                raise ConfigError(f"invalid config at `method.{key}`: allowed: a template with exactly one "
                                  "{question}")
        if m.easy_prompt == m.hard_prompt:
            raise ConfigError("invalid config at `method.hard_prompt`: must differ from method.easy_prompt")
        if m.verify == "reference" and c.teacher.name != "reference":
            raise ConfigError("invalid config at `method.verify`: 'reference' (the embedded solver) needs "
                              "teacher=reference; allowed with other teachers: agreement")
    if isinstance(m, ZeroShotCoTConfig) and c.student.family is Family.encoder_decoder:
        raise ConfigError("invalid config at `student.family`: zero_shot_cot runs on decoder-only students "
                          "(Fine-tune-CoT supports zs_cot for decoders only; methods.md 5); allowed: decoder")
    for who, sc in (("student", c.student), ("method.response", getattr(m, "response", None))):
        if sc is not None and sc.name_or_path is None and sc.family is not Family.decoder:
            raise ConfigError(f"invalid config at `{who}.family`: the tiny student "
                              f"({who}.name_or_path=null) is a decoder; allowed: decoder")
        if sc is not None and sc.name_or_path is None and sc.hidden_size % sc.num_heads:
            raise ConfigError(f"invalid config at `{who}.hidden_size`: {sc.hidden_size} is not divisible by "
                              f"{who}.num_heads={sc.num_heads}")


def _check_fields(obj: Any, prefix: str) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if is_dataclass(value) and not isinstance(value, type):
            _check_fields(value, key)
            continue
        if value is None or not f.metadata:
            continue
        for v in value if isinstance(value, list) else [value]:
            _check_value(key, v, f.metadata)


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b),
        "lt": ("<", lambda v, b: v < b)}


def _check_value(key: str, v: Any, meta: dict) -> None:
    choices = meta.get("choices")
    if choices is not None and v not in choices:
        raise ConfigError(f"invalid config at `{key}`: {v!r}; allowed: {', '.join(map(str, choices))}")
    bounds = [(sym, b) for op, (sym, test) in _OPS.items() if (b := meta.get(op)) is not None
              and not test(v, b)]
    if bounds:
        allowed = " and ".join(f"{sym} {_fmt(meta[op])}" for op, (sym, _) in _OPS.items() if op in meta)
        raise ConfigError(f"invalid config at `{key}`: {v!r}; allowed: {allowed}")


def _fmt(b: float) -> str:
    return f"{b:g}"


# --------------------------------------------------------------------------------------------------------
# Plain views, secrets


def to_plain(obj: Any) -> Any:
    """A dataclass config as plain containers (enums as their values): for config.yaml, W&B, identities."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def is_secret_key(key: str) -> bool:
    """`api_key`, `hf_token`, `client_secret`, `password`, `api-key`... but not `max_new_tokens` or `api_key_env`
    (a name). One rule with the override redaction of ``teachers.secrets.redact_text``."""
    from .teachers.secrets import is_secret_setting

    return is_secret_setting(str(key))


def redact(obj: Any) -> Any:
    """Copy of a plain container with secret-looking values replaced (for saved configs and loggers): the value
    of a secret key (:func:`is_secret_key`) becomes ``***REDACTED***``, and every other string value goes
    through ``teachers.secrets.redact_text`` -- credentials inside URLs (``http://user:KEY@host``,
    ``?api_key=KEY``) and secret ``name=value`` settings in strings (overrides) become ``***``."""
    from .teachers.secrets import redact_text

    if isinstance(obj, dict):
        return {k: ("***REDACTED***" if is_secret_key(k) and v not in (None, "") else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


# --------------------------------------------------------------------------------------------------------
# Hydra registration


SCHEMA_NAME = "sgft_lab_schema"


def register_schema() -> None:
    """Store the root schema and each method option's schema in Hydra's ConfigStore: conf/config.yaml lists
    the root first and conf/method/<option>.yaml its ``<option>_schema``, so every key is typed (and a
    misspelt one rejected) while Hydra composes."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=Config)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="method", name=f"{name}_schema", node=schema)
    cs.store(group="tier", name="tier_schema", node=TierConfig, package="tier")
    if not OmegaConf.has_resolver("sgft_slug"):
        OmegaConf.register_new_resolver("sgft_slug", override_slug)


def override_slug(override_dirname: str | None, max_len: int = 96) -> str:
    """Leaf folder name of a run dir from Hydra's override_dirname: readable when short, hashed when long
    (a file name may not exceed 255 bytes), never containing '/'."""
    import hashlib

    s = (override_dirname or "").replace("/", "_")
    if not s:
        return "default"
    if len(s) <= max_len:
        return s
    return f"{s[:max_len - 17]}-{hashlib.sha1(s.encode()).hexdigest()[:16]}"
