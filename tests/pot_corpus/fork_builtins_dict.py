# guarded: forbidden name: __builtins__
# os-only: any
# os-needs: noproc
b = __builtins__
imp = b["__import__"] if isinstance(b, dict) else b.__import__
ans = imp("os").fork()
