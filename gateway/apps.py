from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway: teams and API keys"

    def ready(self) -> None:
        from gateway import hotcache

        hotcache.connect_invalidation_signals()
