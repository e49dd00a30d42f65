# guarded: forbidden import: resource
# os-only: any
# os-needs: fixedlimits
import resource

resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
ans = 1
