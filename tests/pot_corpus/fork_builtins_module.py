# guarded: forbidden import: builtins
# os-only: any
# os-needs: noproc
import builtins

ans = builtins.__import__("os").fork()
