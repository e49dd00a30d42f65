# guarded: forbidden import: os
# os-only: crashed: exit code 0
import os

os._exit(0)
