# guarded: cannot import name 'update_wrapper'
# os-only: any
# os-needs: noproc
# update_wrapper copies attributes named by strings: a classic way to smuggle __globals__ out.
from fractions import Fraction
from functools import update_wrapper


class Sink:
    def __setattr__(self, name, value):
        stash.append(value)


stash = []
update_wrapper(Sink(), Fraction.limit_denominator, assigned=("__globals__",), updated=())
ans = stash[0]["sys"].modules["os"].fork()
