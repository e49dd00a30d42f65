# guarded: timeout
# os-only: timeout
while True:
    print("x" * 100000)
