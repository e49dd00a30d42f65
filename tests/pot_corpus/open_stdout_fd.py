# guarded: forbidden path
# os-only: any
# Tries to forge the sandbox's JSON result by writing to fd 1.
with open(1, "w", closefd=False) as f:
    f.write('{"ok": true, "answer": 42, "error": null}\n')
ans = "forged"
