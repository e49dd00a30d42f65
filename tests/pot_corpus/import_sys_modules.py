# guarded: forbidden import: sys
# os-only: any
# os-needs: noproc
import sys

ans = sys.modules["os"].system("echo pwned > @@OUTSIDE@@")
if ans != 0:
    raise OSError("system() failed")
