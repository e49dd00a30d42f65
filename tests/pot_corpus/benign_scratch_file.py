# answer: 6
# Writing and reading a scratch file inside the work dir is allowed.
with open("scratch.txt", "w") as f:
    f.write("1 2 3")
with open("scratch.txt") as f:
    ans = sum(int(x) for x in f.read().split())
