# guarded: forbidden attribute: __class__
# os-only: any
# os-needs: noproc
u = "_" * 2
base = getattr(getattr((), u + "class" + u), u + "base" + u)
classes = getattr(base, u + "subclasses" + u)()
popen = [c for c in classes if getattr(c, u + "name" + u) == "Popen"][0]
popen(["sh", "-c", "echo pwned > @@OUTSIDE@@"]).wait()
ans = 1
