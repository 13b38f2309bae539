"""``python -m resscale``: the same CLI as the ``resscale`` command."""
from .cli import app

app()
