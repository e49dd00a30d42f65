# guarded: forbidden attribute: __class__
# os-only: any
# os-needs: noproc
popen = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "Popen"]
if not popen:
    raise LookupError("no Popen class loaded")
popen[0](["sh", "-c", "echo pwned > @@OUTSIDE@@"]).wait()
ans = 1
