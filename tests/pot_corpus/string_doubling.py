# guarded: memory
# os-only: memory
s = "x"
while True:
    s += s
