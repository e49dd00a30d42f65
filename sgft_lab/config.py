"""The config schema: one dataclass per config group.

``validate(cfg)`` merges the composed Hydra config into these dataclasses before any work starts, so a
misspelt key or a wrong type fails at once with the offending key named. Fields shared by several
presets of a group live in one dataclass; a preset sets the subset it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING



@dataclass
class FddConfig:
    """FDD's feedback loop (methods.md 4.2; sgft_lab/methods/fdd.py documents each choice)."""

    rounds: int = 3  # feedback rounds after round 0 (round 0 = train on the teacher's initial set)
    rationale: str = "cot"  # cot (Fine-tune-CoT stage-1 rationales) | pot (programs computing `ans`)
    retrain: str = "base"  # base (each round from the base student) | continue (from the previous round)
    epochs_per_round: Optional[int] = None  # None = trainer.max_epochs
    eval_every_n_epochs: Optional[int] = None  # None = trainer.eval_every_n_epochs (last epoch always)
    easy_prompt: str = (
        "Here is a math word problem that a student solved correctly:\n{question}\nWrite one new, "
        "self-contained math word problem that is harder: it needs more reasoning steps or more involved "
        "relations, and it has a single numerical answer. Output only the new problem.")
    hard_prompt: str = (
        "Here is a math word problem that a student could not solve:\n{question}\nWrite one new, "
        "self-contained math word problem that tests the same skills at the same difficulty, with a "
        "different context and different numbers, and a single numerical answer. Output only the new problem.")
    variant_temperature: float = 0.7
    variant_max_tokens: int = 256
    max_new_per_round: Optional[int] = None  # problems sent for variants per round; None = |original train|
    verify: str = "agreement"  # agreement (label_min_agree of label_samples) | reference (embedded solver)
    label_samples: int = 3
    label_temperature: float = 0.7
    label_min_agree: int = 2
    program_max_tokens: int = 256  # teacher PoT programs
    dedupe_ngram: int = 8  # word n-grams shared with a test/val question ...
    dedupe_threshold: float = 0.5  # ... in this fraction of the new question's n-grams -> dropped
    pot_timeout_s: float = 5.0
    pot_memory_mb: int = 512
    pot_workers: int = 4


@dataclass
class MethodConfig:
    name: str = "fine_tune_cot"  # fine_tune_cot | vanilla_ft (more methods in later modules)
    template: str = "ft_cot_token"  # student sample format (methods.md 2.4)
    use_teacher: bool = True  # vanilla_ft trains on gold answers only
    diverse_samples: int = 1  # D: rationales per training question (1 = greedy, >1 = T=diverse_temperature)
    diverse_temperature: float = 0.7
    rationale_max_tokens: int = 128  # teacher stage-1 max_tokens
    answer_max_tokens: int = 128  # teacher stage-2 max_tokens
    only_correct: bool = True  # the correctness filter (methods.md 2.3)
    teacher_batch_size: int = 64
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific knobs of later methods
    # SGFT: the response model, a second student (conf/method/sgft.yaml: `/student@response`); None elsewhere
    response: Optional["StudentConfig"] = None
    fdd: FddConfig = field(default_factory=FddConfig)  # method=fdd / fdd_pot only


@dataclass
class StudentConfig:
    name: str = "tiny"
    family: str = "decoder"  # decoder | encoder_decoder
    # HF hub name or local path; null = build the tiny Llama from the fields below. Required (MISSING): every
    # student preset says which, so `student=hf` without a name fails at validation instead of going tiny.
    name_or_path: Optional[str] = MISSING
    adapter: str = "none"  # none | lora | qlora
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    padding_side: str = "left"
    use_chat_template: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16 (weights when loading a checkpoint)
    trust_remote_code: bool = False
    # The tiny student: a Llama built from this config, tokenizer trained on the task's own text.
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 344
    vocab_size: int = 512
    max_position_embeddings: int = 512
    # Sequence limits (tokens).
    max_input_tokens: int = 512
    max_label_tokens: int = 512
    max_new_tokens: int = 256
    # Evaluation decoding (students/generation.py): auto (static KV cache + compiled steps on CUDA decoders,
    # HF `generate` elsewhere) | eager (HF `generate`) | static (static KV cache; compiled on CUDA) | vllm
    decode: str = "auto"
    decode_kwargs: dict[str, Any] = field(default_factory=dict)  # static: compile, check_every; vllm: LLM


@dataclass
class TeacherConfig:
    name: str = "reference"  # reference | openai | hf | vllm | replay
    model: Optional[str] = None
    # reference teacher knobs
    error_rate: float = 0.0  # probability that a rationale has a wrong step or a wrong final answer
    diversity: int = 3  # number of phrasings the reference teacher samples from at T > 0
    seed: int = 0
    # API / local backends (issue 4 fills these in)
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable (or api_key_file), never the config
    # Backend-specific extras: openai -> extra request body (e.g. {top_k: 20}); hf -> from_pretrained
    # kwargs; vllm -> vllm.LLM kwargs (tensor_parallel_size, gpu_memory_utilization, max_model_len, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    # teacher=openai: any OpenAI-compatible server (OpenAI, vLLM serve, Ollama, TGI)
    endpoint: str = "chat"  # chat | completions
    api_key_file: Optional[str] = None  # a file holding the key (wins over api_key_env)
    system_prompt: Optional[str] = None  # chat endpoint: optional system message
    send_seed: bool = True  # at T > 0 send seed=f(seed, sample index) so sample k is reproducible where honoured
    max_tokens_field: str = "max_tokens"  # chat: max_completion_tokens for OpenAI reasoning models
    prompts_per_call: int = 1  # completions endpoint: prompts per request (Fine-tune-CoT sent 20)
    cache_namespace: Optional[str] = None  # replaces base_url in the cache identity (same model, other host)
    # The generation engine (async backends): concurrency, rate limits, retries, timeout
    concurrency: int = 16
    requests_per_minute: Optional[float] = None
    tokens_per_minute: Optional[float] = None
    max_retries: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    request_timeout_s: float = 120.0
    prices: dict[str, Any] = field(default_factory=dict)  # {model: {input: USD/1M, output: USD/1M}} overrides
    # teacher=hf / teacher=vllm: local models (model = hub name or path)
    device: Optional[str] = None  # hf: cuda | mps | cpu | cuda:1 ...; None = best available
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    use_chat_template: bool = False  # wrap each prompt as a user message (instruct models)
    trust_remote_code: bool = False
    batch_size: Optional[int] = None  # prompts per backend call; None = method.teacher_batch_size
    # teacher=replay: completions read from JSONL (see sgft_lab/teachers/replay.py for the schema)
    replay_files: list[str] = field(default_factory=list)
    replay_missing: str = "error"  # error | skip (a prompt with no stored completion)
    replay_match: str = "normalized"  # exact | normalized (exact first, then whitespace-normalized)


@dataclass
class BenchmarkConfig:
    name: str = "embedded_arithmetic"
    task: str = "multiarith"  # Fine-tune-CoT scoring key used by answers.py
    source: str = "embedded"  # embedded | local | hub
    generator: Optional[str] = "arithmetic"  # embedded generator: arithmetic | coin_flip | last_letters
    difficulty: int = 2  # steps / flips / words
    n_train: int = 1000
    n_val: int = 100
    n_test: int = 200
    data_seed: int = 0
    split: str = "random"  # random | fine_tune_cot | fine_tune_cot_template (real benchmarks)
    val_fraction: float = 0.1  # validation carved from train (seeded) for real benchmarks
    train_fraction: float = 0.7  # split=random on real benchmarks: train share (Fine-tune-CoT's 70/30)
    n_shot: Optional[int] = None  # subsample training questions (data-size ablations)
    data_dir: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 20
    batch_size: int = 8
    eval_batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    scheduler: str = "constant"  # constant | linear | cosine
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    eval_every_n_epochs: int = 1
    max_eval_examples: Optional[int] = None  # cap val/test size (smoke runs)
    log_every_n_steps: int = 10
    num_workers: int = 0
    enable_progress_bar: bool = True
    save_checkpoints: bool = True
    threads: Optional[int] = None  # torch.set_num_threads on CPU
    # Scale and speed (training.py documents each): several devices/nodes, optimizer, memory, throughput.
    num_nodes: int = 1
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)  # DDPStrategy / FSDPStrategy / ... kwargs
    max_steps: int = -1  # -1 = no step limit (max_epochs decides)
    optimizer: str = "adamw"  # adamw | adamw_fused | adamw_8bit | paged_adamw_8bit | paged_adamw_32bit
    gradient_checkpointing: Optional[bool] = None  # None: on for adapter=qlora (peft's recipe), else off
    group_by_length: bool = False  # batches of similar length (shuffled groups): little compute on padding
    loss_chunk_size: Optional[int] = 4096  # tokens per LM-head + cross-entropy chunk; null = the model's loss
    compile: bool = False  # torch.compile the student's forward (training)
    compile_mode: Optional[str] = None  # torch.compile mode: default | reduce-overhead | max-autotune
    compile_backend: str = "inductor"
    deterministic: bool = False  # Lightning's deterministic algorithms (seed control beyond `seed`)
    checkpoint_every_n_steps: Optional[int] = None  # also rewrite last.ckpt every n optimizer steps


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
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    experiment: Optional[str] = None  # name of the experiment preset, if any
    tier: Optional[str] = None  # scale tier (conf/tier/*.yaml, e.g. embedded); None = the preset's real scale
    print_table: bool = True


class ConfigError(ValueError):
    """A config problem, with the offending key named."""


def validate(cfg: Any) -> Config:
    """Merge a composed DictConfig into the schema; raise ConfigError naming the bad key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(Config)
    try:
        if not isinstance(cfg, dict):
            cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        merged = OmegaConf.merge(schema, cfg)
        obj: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        if "Missing mandatory value" in msg:
            msg = "a value is required here (it is ??? in the preset); set it on the command line"
        raise ConfigError(f"invalid config at `{key}`: {msg}") from None
    _check_choices(obj)
    return obj


def _check_choices(c: Config) -> None:
    choices = {
        "student.family": (c.student.family, ("decoder", "encoder_decoder")),
        "student.adapter": (c.student.adapter, ("none", "lora", "qlora")),
        "student.padding_side": (c.student.padding_side, ("left", "right")),
        "benchmark.source": (c.benchmark.source, ("embedded", "local", "hub")),
        "trainer.scheduler": (c.trainer.scheduler, ("constant", "linear", "cosine")),
    }
    for key, (val, allowed) in choices.items():
        if val not in allowed:
            raise ConfigError(f"invalid config at `{key}`: {val!r} is not one of {allowed}")
    if c.method.diverse_samples < 1:
        raise ConfigError("invalid config at `method.diverse_samples`: must be >= 1")
    if not 0.0 <= c.teacher.error_rate <= 1.0:
        raise ConfigError("invalid config at `teacher.error_rate`: must be in [0, 1]")


def is_secret_key(key: str) -> bool:
    """`api_key`, `hf_token`, `client_secret`, `password`... but not `max_new_tokens` or `api_key_env` (a name)."""
    k = str(key).lower()
    if k.endswith("_env") or k.endswith("_file"):
        return False
    return "api_key" in k or bool({"token", "secret", "password", "apikey"} & set(k.split("_")))


def redact(obj: Any) -> Any:
    """Copy of a plain container with secret-looking values replaced (for saved configs and loggers)."""
    if isinstance(obj, dict):
        return {k: ("***REDACTED***" if is_secret_key(k) and v not in (None, "") else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


SCHEMA_NAME = "sgft_lab_schema"


def register_schema() -> None:
    """Store the schema in Hydra's ConfigStore; conf/config.yaml lists it first in its defaults, so every
    field exists (and is typed) before the group files merge in: `trainer.threads=2` works without `+`."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)
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
