# guarded: timeout
# os-only: timeout
# A long computation in C that never returns to the interpreter (no signal checks, no syscalls).
x = 7 ** (10 ** 8)
ans = x % 10
