# guarded: forbidden import: threading
# os-only: can't start new thread
# os-needs: noproc
import threading

threads = [threading.Thread(target=lambda: None) for _ in range(8)]
for t in threads:
    t.start()
ans = len(threads)
