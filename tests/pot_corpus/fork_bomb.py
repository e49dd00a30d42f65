# guarded: forbidden import: os
# os-only: any
# os-needs: noproc
import os

forks = 0
while forks < 10000:
    if os.fork() == 0:
        while True:
            pass
    forks += 1
ans = forks
