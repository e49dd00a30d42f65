# guarded: NameError: name 'eval' is not defined
# os-only: any
# os-needs: noproc
ans = eval("__imp" + "ort__('os')").fork()
