from eifbuild.cli import entrypoint

entrypoint()
