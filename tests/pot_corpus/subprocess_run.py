# guarded: forbidden import: subprocess
# os-only: any
# os-needs: noproc
import subprocess

subprocess.run(["sh", "-c", "echo pwned > @@OUTSIDE@@"], check=True)
ans = 1
