# guarded: timeout
# os-only: timeout
n = 0
while True:
    n += 1
