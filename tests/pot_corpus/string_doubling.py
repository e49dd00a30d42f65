# guarded: memory|timeout
# os-only: memory|timeout
s = "x"
while True:
    s += s
