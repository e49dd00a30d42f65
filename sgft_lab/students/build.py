"""Build a student: the tiny Llama (random init, own tokenizer) or a Hugging Face checkpoint, with an adapter.

Adapters: ``none`` (full fine-tuning), ``lora`` (peft) or ``qlora`` (4-bit nf4 base via bitsandbytes + LoRA).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from sgft_lab.config import Adapter, Decode, Family, StudentConfig

TOKENIZER_DIR = "tokenizer"  # under work_dir: the tiny student's trained tokenizer
INIT_DIR = "init_model"  # under work_dir: the tiny student's random-init weights


@dataclass
class Student:
    model: Any  # a transformers PreTrainedModel, or a peft PeftModel around one
    tokenizer: Any  # a transformers tokenizer with pad and eos set
    family: str  # decoder | encoder_decoder
    cfg: StudentConfig  # typed: cfg.adapter, cfg.family and cfg.decode are enums

    @property
    def chat(self) -> bool:
        """Prompts are wrapped in the tokenizer's chat template (student.chat_template)."""
        return bool(self.cfg.chat_template)

    def generate(self, prompts: list[str], max_new_tokens: int, batch_size: int = 64, progress: bool = False,
                 max_input_tokens: int | None = None, label: str = "generating",
                 max_length: int | None = None) -> list[str]:
        """Greedy completions of ``prompts`` with this student's decoding choices (students/generation.py);
        ``max_length``: Fine-tune-CoT's length rule instead of ``max_new_tokens``."""
        from sgft_lab.students.generation import DecodeOptions, generate

        return generate(self.model, self.tokenizer, self.family, prompts, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, progress=progress, max_input_tokens=max_input_tokens,
                        decode=DecodeOptions.of(self.cfg), chat=self.chat, label=label, max_length=max_length)

    def save(self, path: str | Path) -> Path:
        """Save the tokenizer and the weights (for LoRA/QLoRA only the adapter, via peft) under ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path

    def trained_names(self) -> set[str]:
        """The parameters fine-tuning changes: every one (adapter none; LISA freezes blocks only for a while),
        or the adapter's (LoRA, QLoRA)."""
        if self.cfg.adapter is Adapter.none:
            return {n for n, _ in self.model.named_parameters()}
        return {n for n, p in self.model.named_parameters() if p.requires_grad}

    def save_trainable(self, path: str | Path) -> None:
        """The trained tensors only -- the adapter for LoRA -- for a later stage to load (atomic)."""
        import torch

        path = Path(path)
        keep = self.trained_names()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({k: v for k, v in self.model.state_dict().items() if k in keep}, tmp)
        tmp.replace(path)

    def load_trainable(self, path: str | Path) -> None:
        """Load what :meth:`save_trainable` wrote; a file that does not fit the student is an error."""
        import torch

        from sgft_lab.errors import CheckpointError

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: the stage's trained weights are missing; delete the stage's folder "
                                  "to retrain it")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only
        except Exception as e:  # a truncated or foreign file
            raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}); delete it to retrain") from None
        result = self.model.load_state_dict(state, strict=False)
        trainable = self.trained_names()
        missing = [k for k in result.missing_keys if k in trainable]
        if result.unexpected_keys or missing:
            raise CheckpointError(f"{path}: weights do not fit the student (unexpected "
                                  f"{result.unexpected_keys[:3]}, missing {missing[:3]})")


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; a packed 4-bit weight counts x2 (2 values a byte), like peft."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored uint8
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def disable_cpu_bf16_repack(model) -> int:
    """Set ``support_avx512bf16_for_cpu = False`` on every ``bnb.nn.Linear4bit``; return how many.

    Why: on a CPU with AVX512-BF16, a Linear4bit that runs an eval-mode forward with no grad (Lightning's
    sanity check, generation) repacks its weight into a CPU-only layout whose kernel has no autograd. From
    then on no gradient flows back through that layer (earlier LoRA weights get None or wrong gradients) and
    training silently stalls; bitsandbytes 0.50 prints only a UserWarning. Without the repack the 4-bit
    forward/backward match fp32 LoRA (environment.md; tests/test_qlora_cpu.py guards it).
    """
    import bitsandbytes as bnb

    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _torch_dtype(name: str):
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"student.dtype={name!r} is not a torch dtype (float32 | bfloat16 | float16)")
    return dtype


def _tiny_tokenizer(cfg: StudentConfig, corpus: list[str] | None, work_dir: Path | None):
    from transformers import PreTrainedTokenizerFast

    from sgft_lab.students.tokenizer import train_tokenizer

    saved = work_dir / TOKENIZER_DIR if work_dir is not None else None
    if corpus is not None:
        if not corpus:
            raise ValueError("build_student: the tiny student's tokenizer corpus is empty")
        tok = train_tokenizer(corpus, cfg.vocab_size)
        if saved is not None:
            tok.save_pretrained(saved)
    elif saved is not None and (saved / "tokenizer.json").is_file():
        tok = PreTrainedTokenizerFast.from_pretrained(saved)
    else:
        raise ValueError("build_student: the tiny student (student.name_or_path=null) needs `corpus` to "
                         f"train its tokenizer, or a work_dir holding one ({TOKENIZER_DIR}/tokenizer.json)")
    tok.padding_side = cfg.padding_side
    if len(tok) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens > student.vocab_size={cfg.vocab_size}")
    return tok


def _tiny_model(cfg: StudentConfig, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.hidden_size % cfg.num_heads:
        raise ValueError(f"student.hidden_size={cfg.hidden_size} is not divisible by "
                         f"student.num_heads={cfg.num_heads}")
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(config)  # random init: the caller seeds (lightning.seed_everything)


def _bnb_config():
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
    )


def _load_pretrained(path: str | Path, cfg: StudentConfig, quantize: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = AutoModelForCausalLM if cfg.family is Family.decoder else AutoModelForSeq2SeqLM
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if quantize:
        kwargs["quantization_config"] = _bnb_config()
        # A 4-bit model cannot be moved after loading: place it on the device it will train on.
        kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
    return cls.from_pretrained(str(path), **kwargs)


def _add_adapter(model, cfg: StudentConfig):
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if cfg.adapter is Adapter.qlora:
        # peft's QLoRA recipe: fp32 norms/embeddings, input grads on. Gradient checkpointing is the trainer's
        # choice (trainer.gradient_checkpointing; null = on for QLoRA, as in peft's recipe): StudentModule.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type=TaskType.CAUSAL_LM if cfg.family is Family.decoder else TaskType.SEQ_2_SEQ_LM,
    )
    import torch

    # The adapter's random init is drawn from the run's seed alone, not from whatever was drawn before: a rerun
    # loads the tiny student's saved base init instead of drawing it, and must still get the same adapter.
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(torch.initial_seed())
        return get_peft_model(model, lora)


def build_student(cfg: StudentConfig, corpus: list[str] | None = None,
                  work_dir: Path | None = None) -> Student:
    """Build the student ``cfg`` describes.

    - ``cfg.name_or_path`` None: a tiny ``LlamaForCausalLM`` from the arch fields (random init; seed first)
      and a BPE tokenizer trained on ``corpus`` (or reloaded from ``work_dir/tokenizer`` when ``corpus`` is
      None). With ``work_dir`` both are saved there, and an init already saved there is loaded instead of
      drawing a new one (so a run can be rebuilt). QLoRA needs ``work_dir``: a 4-bit model loads from a
      checkpoint, so the random init is saved and loaded back quantised.
    - otherwise: ``AutoTokenizer`` + ``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM`` from
      ``name_or_path`` (weights in ``cfg.dtype``; pad token = eos when missing).
    Then the adapter: none | lora | qlora. On CPU every 4-bit layer gets ``disable_cpu_bf16_repack``.
    """
    import torch
    from transformers import AutoTokenizer

    try:  # a StudentConfig made in Python may hold plain strings: make the choices typed
        cfg = replace(cfg, family=Family(cfg.family), adapter=Adapter(cfg.adapter), decode=Decode(cfg.decode))
    except ValueError as e:
        raise ValueError(f"student: {e}") from None
    work_dir = Path(work_dir) if work_dir is not None else None
    quantize = cfg.adapter is Adapter.qlora

    if cfg.name_or_path in (None, MISSING) and cfg.name == "hf":
        # conf/student/hf.yaml says `name_or_path: ???`: a forgotten override must not build the tiny model.
        raise ValueError("student=hf needs student.name_or_path=<hub name or local path>")
    if cfg.name_or_path == MISSING:
        # A StudentConfig made in Python without name_or_path holds the schema's MISSING marker ('???'); the
        # Hydra path never gets here (validate() requires the value). Read it as null: the tiny student.
        cfg = replace(cfg, name_or_path=None)
    if cfg.name_or_path is None:
        if cfg.family is not Family.decoder:
            raise ValueError("the tiny student (student.name_or_path=null) is a decoder: "
                             "set student.family=decoder")
        if quantize and work_dir is None:
            raise ValueError("build_student: a tiny student with adapter=qlora needs work_dir (the random "
                             "init is saved there and loaded back in 4 bits)")
        tok = _tiny_tokenizer(cfg, corpus, work_dir)
        init = work_dir / INIT_DIR if work_dir is not None else None
        if init is None or not (init / "config.json").is_file():
            model = _tiny_model(cfg, tok)
            if init is not None:
                model.save_pretrained(init)
        elif not quantize:
            model = _load_pretrained(init, cfg, quantize=False)  # rebuilding a run: the same init as before
        if quantize:
            model = _load_pretrained(init, cfg, quantize=True)
        else:
            model = model.to(_torch_dtype(cfg.dtype))
    else:
        tok = AutoTokenizer.from_pretrained(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
        tok.padding_side = cfg.padding_side
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(f"tokenizer of {cfg.name_or_path} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        model = _load_pretrained(cfg.name_or_path, cfg, quantize)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id

    if cfg.chat_template:  # Student.chat: encode.prompt_ids wraps every prompt as a user message
        if cfg.family is not Family.decoder:
            raise ValueError("student.chat_template=true is for decoder (Instruct) students")
        if not getattr(tok, "chat_template", None):
            raise ValueError("student.chat_template=true, but the tokenizer of "
                             f"{cfg.name_or_path or 'the tiny student'} has no chat template")
    if cfg.adapter is not Adapter.none:
        model = _add_adapter(model, cfg)
    if quantize and not torch.cuda.is_available():
        disable_cpu_bf16_repack(model)
    return Student(model=model, tokenizer=tok, family=cfg.family.value, cfg=cfg)
