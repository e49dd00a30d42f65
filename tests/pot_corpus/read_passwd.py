# guarded: forbidden path
# os-only: any
# os-needs: nofs
with open("/etc/passwd") as f:
    ans = len(f.read())
