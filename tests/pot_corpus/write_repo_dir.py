# guarded: forbidden path
# os-only: any
# os-needs: nofs
with open("@@REPO@@", "w") as f:
    f.write("pwned")
ans = 1
