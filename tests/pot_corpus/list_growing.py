# guarded: memory
# os-only: memory
hoard = []
while True:
    hoard.append([0] * 10 ** 6)
