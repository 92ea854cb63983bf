from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The request core. It owns no models any more; its migrations stay, since
    existing databases recorded them (the account tables moved to `accounts`
    with their table names kept)."""

    name = "gateway"
    verbose_name = "Gateway: the request core"

    def ready(self) -> None:
        from gateway import config

        config.connect_invalidation_signals()
