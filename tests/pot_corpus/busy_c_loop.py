# guarded: timeout
# os-only: timeout
# A busy loop inside C that never checks for signals and makes no syscalls: the program's own
# timer cannot interrupt it, only the parent's process-group kill (or RLIMIT_CPU) ends it.
ans = sum(range(10 ** 13))
