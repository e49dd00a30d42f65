# guarded: forbidden import: socket
# os-only: any
# os-needs: nonet
import socket

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1)
s.connect(("127.0.0.1", int("@@PORT@@")))
s.sendall(b"pwned")
ans = 1
