from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "tools"

    def ready(self) -> None:
        from providers.crypto import rotation_register
        from tools.models import ToolServer

        # A tool server's secrets are re-encrypted with provider credentials (manage.py rotate_credentials).
        rotation_register(ToolServer, "secrets_encrypted")
