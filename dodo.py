# Tasks for ./eif.toml: doit eif | doit check | doit list | doit clean
from eifbuild.tasks import *  # noqa: F403
