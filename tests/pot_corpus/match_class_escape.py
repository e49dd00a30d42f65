# guarded: forbidden attribute: __class__
# os-only: any
# os-needs: noproc
match ():
    case object(__class__=cls):
        pass
popen = [c for c in cls.__base__.__subclasses__() if c.__name__ == "Popen"][0]
popen(["sh", "-c", "echo pwned > @@OUTSIDE@@"]).wait()
ans = 1
