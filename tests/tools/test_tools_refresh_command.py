"""`manage.py tools_refresh`, run as a command against the fake MCP server."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.fakes.mcp_http_server import FakeMCPHttpServer
from tests.tools.mcp_support import closed_port_url, http_server_row
from tools.catalog import approve_pending
from tools.models import Tool, ToolServer


@pytest.fixture
def fake():
    server = FakeMCPHttpServer().start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_tools_refresh_command_prints_what_changed(fake):
    http_server_row(fake.url)
    out = StringIO()
    call_command("tools_refresh", "--server", "fakehttp", stdout=out)
    assert "new, awaiting approval: echo, add, slow, fails, crash, big" in out.getvalue()
    for tool in Tool.objects.all():
        approve_pending(tool)
    fake.tools["add"] = ("Add two numbers, exactly.", fake.tools["add"][1])
    out = StringIO()
    call_command("tools_refresh", stdout=out)
    assert "changed definition pending approval: add" in out.getvalue()
    assert Tool.objects.get(name="add").description == "Add two numbers."
    ToolServer.objects.create(name="gone", kind="http", url=closed_port_url())
    with pytest.raises(CommandError, match="gone"):
        call_command("tools_refresh", stdout=StringIO())
    assert ToolServer.objects.get(name="gone").healthy is False
    with pytest.raises(CommandError, match="No tool server named nosuch"):
        call_command("tools_refresh", "--server", "nosuch", stdout=StringIO())
