# guarded: forbidden attribute: gi_frame
# os-only: any
# os-needs: noproc
# Walks from a running generator's frame up to the sandbox runner's globals.
def gen():
    yield g.gi_frame.f_back


g = gen()
frame = next(g)
while frame is not None and "os" not in frame.f_globals:
    frame = frame.f_back
ans = frame.f_globals["os"].fork()
