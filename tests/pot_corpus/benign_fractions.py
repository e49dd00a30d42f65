# answer: 3
from fractions import Fraction

ans = Fraction(1, 3) + Fraction(2, 3) * 4
