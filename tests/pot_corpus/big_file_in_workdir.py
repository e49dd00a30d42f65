# guarded: File too large
# os-only: File too large
with open("big.bin", "wb") as f:
    f.write(b"x" * 10 ** 8)
ans = 1
