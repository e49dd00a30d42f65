# guarded: memory
# os-only: memory
ans = len(bytearray(10 ** 10))
