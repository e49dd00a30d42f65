# guarded: memory|timeout
# os-only: memory|timeout
hoard = []
while True:
    hoard.append([0] * 10 ** 6)
