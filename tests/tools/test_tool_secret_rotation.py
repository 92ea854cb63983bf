"""A tool server's secrets follow provider credentials through key rotation
(`manage.py rotate_credentials`, providers/crypto.py)."""

import io

from cryptography.fernet import Fernet
from django.core.management import call_command

from providers.crypto import derive_key
from tests.tools.mcp_support import stdio_server_row
from tools.models import ToolServer
from tools.server_config import server_secrets


def test_tool_server_secrets_survive_key_rotation(db, settings):
    server = stdio_server_row(env={"GITHUB_TOKEN": "ghp-rotate-me"})
    new_key = Fernet.generate_key().decode()
    settings.EP_ENCRYPTION_KEYS = [new_key, derive_key(settings.SECRET_KEY)]
    out = io.StringIO()
    call_command("rotate_credentials", stdout=out)
    assert "Re-encrypted 1 credential(s)." in out.getvalue()
    settings.EP_ENCRYPTION_KEYS = [new_key]  # the old key is gone now
    assert server_secrets(ToolServer.objects.get(pk=server.pk)) == {"GITHUB_TOKEN": "ghp-rotate-me"}
