# answer: 16.0
import math

ans = 3 * 4 + math.sqrt(16)
