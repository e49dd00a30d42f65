# guarded: forbidden import: ctypes
# os-only: any
# os-needs: noproc
import ctypes

libc = ctypes.CDLL(None, use_errno=True)
pid = libc.fork()
if pid == 0:
    libc._exit(0)
if pid < 0:
    raise OSError(ctypes.get_errno(), "fork refused")
ans = pid
