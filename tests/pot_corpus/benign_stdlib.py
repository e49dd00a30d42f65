# answer: 45
import bisect
import heapq
import re
import statistics
from collections import Counter
from datetime import date
from decimal import Decimal
from functools import reduce
from itertools import combinations

words = Counter("the cat and the hat and the bat".split())
pairs = len(list(combinations(range(5), 2)))  # 10
days = (date(2024, 3, 1) - date(2024, 2, 1)).days  # 29
mean = statistics.mean([1, 2, 3])  # 2
product = reduce(lambda a, b: a * b, [1, 2, 3])  # 6
smallest = heapq.nsmallest(1, [5, 3, 9])[0]  # 3
pos = bisect.bisect([1, 2, 4], 3)  # 2
nums = [int(x) for x in re.findall(r"\d+", "a1b2")]  # [1, 2]
money = Decimal("0.1") * 3  # 0.3
ans = words["the"] + pairs + days + mean + product - smallest - pos + sum(nums) - 3 + int(money * 10) - 3  # 45
