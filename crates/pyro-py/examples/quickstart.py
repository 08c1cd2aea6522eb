# pyro-sdk example
from pyro_sdk import Pyro

pyro = Pyro()  # state in $PYRO_HOME, environments in $PYRO_CACHE_DIR (defaults under ~)

# One command in a fresh VM; the VM is gone afterwards.
run = pyro.run_in_vm(environment="debian:12", command="git --version")
print("run_in_vm:", run["exit_code"], run["stdout"].strip())

# A workspace lives across calls until deleted.
ws = pyro.create_workspace(environment="debian:12")
workspace_id = ws["workspace_id"]
try:
    r = pyro.exec_workspace(workspace_id, command="echo 'hello from the guest' > hello.txt && uname -s")
    print("exec:", r["exit_code"], r["stdout"].strip())
    f = pyro.read_workspace_file(workspace_id, "hello.txt")
    print("file:", f["size_bytes"], f["content"].strip())
finally:
    print("delete:", pyro.delete_workspace(workspace_id)["deleted"])
