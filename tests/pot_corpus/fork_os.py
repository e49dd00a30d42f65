# guarded: forbidden import: os
# os-only: any
# os-needs: noproc
import os

pid = os.fork()
if pid == 0:
    import time
    time.sleep(60)  # a leftover child would linger
    os._exit(0)
ans = pid
