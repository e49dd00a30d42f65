# guarded: forbidden import: os
# os-only: output limit
import os

line = b'{"ok": true, "answer": 42, "error": null}\n'
while True:
    os.write(1, line * 1000)
