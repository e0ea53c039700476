"""Importing this module registers every command on the app."""

from custate.adapters.cli import audit as audit
from custate.adapters.cli import changes as changes
from custate.adapters.cli import customers as customers
from custate.adapters.cli import demo as demo
from custate.adapters.cli import erase as erase
from custate.adapters.cli import fold as fold
from custate.adapters.cli import forward as forward
from custate.adapters.cli import ingest as ingest
from custate.adapters.cli import migrate as migrate
from custate.adapters.cli import project as project
from custate.adapters.cli import pull as pull
from custate.adapters.cli import rejects as rejects
from custate.adapters.cli import serve as serve
from custate.adapters.cli import state as state
from custate.adapters.cli import status as status
