# guarded: forbidden path
# os-only: any
# os-needs: nofs
with open("../../../../../../../@@OUTSIDE@@", "w") as f:
    f.write("pwned")
ans = 1
