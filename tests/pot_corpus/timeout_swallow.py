# guarded: timeout
# os-only: timeout
# Catches the sandbox's own timeout exception and keeps going: only the process kill ends it.
n = 0
while True:
    try:
        while True:
            n += 1
    except BaseException:
        pass
