# guarded: AttributeError
# os-only: any
# os-needs: noproc
# fractions imports sys at module level; the proxy module must not expose it.
import fractions

ans = fractions.sys.modules["os"].fork()
