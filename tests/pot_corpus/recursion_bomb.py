# guarded: RecursionError
# os-only: RecursionError
def f(n):
    return f(n + 1) + 1


ans = f(0)
