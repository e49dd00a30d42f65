# guarded: forbidden attribute: __import__
# os-only: any
# os-needs: noproc
import builtins

ans = builtins.__import__("os").fork()
