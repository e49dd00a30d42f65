# guarded: forbidden name: __import__
# os-only: any
# os-needs: noproc
ans = __import__("os").fork()
