"""sgft_lab: distil reasoning from a teacher LLM into small students.

Fine-tune-CoT (Ho et al. 2022), SGFT (Bi et al. 2024) and FDD (Zhu et al. 2024), as Hydra + Lightning
experiments. The package keeps heavy imports (torch, transformers, lightning) inside the functions that
need them, so config-only commands start fast.
"""

__version__ = "0.1.0"
