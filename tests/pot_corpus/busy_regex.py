# guarded: timeout
# os-only: timeout
# Catastrophic backtracking: a busy loop inside the C regex engine.
import re

ans = 1 if re.match(r"(a+)+$", "a" * 64 + "b") else 2
