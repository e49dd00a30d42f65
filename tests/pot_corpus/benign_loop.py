# answer: 5050
total = 0
for i in range(1, 101):
    total += i
ans = total
