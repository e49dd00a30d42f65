# answer: 12.5
class Shape:
    def __init__(self, name):
        self.name = name


class Rect(Shape):
    def __init__(self, w, h):
        super().__init__("rect")
        self.w, self.h = w, h

    def area(self):
        return self.w * self.h


r = Rect(2.5, 5)
print(r.name, type(r).__name__, r.area())
ans = r.area()
