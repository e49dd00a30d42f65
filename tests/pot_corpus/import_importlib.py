# guarded: forbidden import: importlib
# os-only: any
# os-needs: noproc
import importlib

ans = importlib.import_module("os").fork()
