"""devcluster's process kubelet: runs the pods of one node as local processes.

Kept free of imports: `container_init` is started as `python -m devcluster.kubelet.container_init` for every
container, and importing this package must cost it nothing.
"""
