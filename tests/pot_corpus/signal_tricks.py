# guarded: forbidden import: signal
# os-only: timeout
# Ignores the alarm, SIGXCPU and SIGTERM, then sleeps and spins: only SIGKILL stops it.
import signal
import time

for s in (signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
while True:
    time.sleep(0.05)
    for _ in range(10 ** 6):
        pass
