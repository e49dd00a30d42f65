# guarded: forbidden import: os
# os-only: any
# os-needs: nokill
# Signal 0 only probes whether the caller could be signalled (it is harmless either way).
import os

os.kill(os.getppid(), 0)
ans = 1
